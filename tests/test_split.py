"""Class folders alone: the manifest stage splits them by each image's SHA-1, stratified by
class, unmoved by new photos, with identical files together; and train/test data sets keep
their split, but never train on a copy of a test image."""

import hashlib
import json

import pytest
from synthetic import class_files, dataset_files, write_tree

from hotdog.core.errors import StageError
from hotdog.core.schema import classes_of
from hotdog.data.manifest import scan
from hotdog.data.split import draw, split_of

CLASSES = ("0", "1", "2", "3")


def folders(tmp_path, per_class=30, classes=CLASSES, seed=0):
    """An extracted class-folders data set (as the download stage leaves it): its root."""
    files = class_files(classes, per_class, top="images", seed=seed)
    write_tree(tmp_path, files)
    return tmp_path / "images"


def splits(result) -> dict[str, set[str]]:
    return {split: set(table.column("path").to_pylist()) for split, table in result.tables.items()}


def test_the_draw_is_the_sha1_as_a_fraction():
    assert draw("0" * 40) == 0.0 and draw("8" + "0" * 39) == 0.5 and draw("f" * 40) < 1.0
    assert split_of("1" + "0" * 39, 0.1) == "test" and split_of("2" + "0" * 39, 0.1) == "train"


def test_class_folders_are_split_by_content_and_stratified(tmp_path):
    result = scan(folders(tmp_path), None, 0.25, 0.0, workers=1)
    assert result.classes == CLASSES and result.summary["layout"] == "folders"
    assert result.summary["test_fraction"] == 0.25
    for split, table in result.tables.items():
        assert classes_of(table, tmp_path, "manifest") == CLASSES
        for row in table.to_pylist():
            assert row["split"] == split == split_of(row["sha1"], 0.25)
            assert row["path"].startswith(f"{row['class_name']}/") and CLASSES[row["label"]] == row["class_name"]
    for cls in CLASSES:  # every class is cut near the same fraction
        test = result.summary["test"]["per_class"][cls]
        assert 3 <= test <= 14 and test + result.summary["train"]["per_class"][cls] == 30


def test_new_photos_never_move_the_others(tmp_path):
    root = folders(tmp_path / "a", per_class=20)
    before = splits(scan(root, None, 0.3, 0.0, workers=1))
    more = class_files(CLASSES, 35, top="images", seed=7)  # other pixels: other images
    for name, data in more.items():
        if int(name.rsplit("/", 1)[1].split(".")[0]) >= 20:
            (tmp_path / "a" / name).write_bytes(data)
    after = splits(scan(root, None, 0.3, 0.0, workers=1))
    assert before["train"] <= after["train"] and before["test"] <= after["test"]
    assert len(after["train"] | after["test"]) == 4 * 35


def test_identical_files_land_together_and_are_counted(tmp_path):
    root = folders(tmp_path, per_class=12)
    for cls in CLASSES:  # a copy of every photo under a new name
        for path in list((root / cls).iterdir()):
            (root / cls / f"copy-{path.name}").write_bytes(path.read_bytes())
    result = scan(root, None, 0.3, 0.0, workers=1)
    where = {}
    for split, table in result.tables.items():
        for row in table.to_pylist():
            where.setdefault(row["sha1"], set()).add(split)
    assert all(len(s) == 1 for s in where.values()) and len(where) == 4 * 12
    assert result.summary["duplicates"] == {"copies": 4 * 12, "left_out_of_train": 0}


def test_a_given_split_never_trains_on_a_copy_of_a_test_image(tmp_path):
    root = write_tree(tmp_path, dataset_files({"train": 4, "test": 3}))
    copy = (root / "test/hotdog/1.jpg").read_bytes()
    (root / "train/hotdog/99.jpg").write_bytes(copy)
    result = scan(root, None, 0.2, 0.0, workers=1)
    assert "train/hotdog/99.jpg" not in splits(result)["train"]
    assert result.summary["duplicates"] == {"copies": 1, "left_out_of_train": 1}
    assert result.summary["train"]["rejected"] == 0  # not counted as a bad image
    assert result.rejects["train"][0]["reason"] == "identical to test/hotdog/1.jpg (same SHA-1), which is in test"
    assert hashlib.sha1(copy).hexdigest() in {r["sha1"] for r in result.tables["test"].to_pylist()}


def test_data_classes_pins_the_order_and_picks_a_subset(tmp_path):
    result = scan(folders(tmp_path, per_class=20), ["3", "0", "2"], 0.3, 0.0, workers=1)
    assert result.classes == ("3", "0", "2") and result.summary["classes"] == ["3", "0", "2"]
    rows = result.tables["train"].to_pylist() + result.tables["test"].to_pylist()
    assert {r["class_name"] for r in rows} == {"3", "0", "2"}
    assert all(result.classes[r["label"]] == r["class_name"] for r in rows)
    json.dumps(result.summary)  # metrics/manifest.json holds plain JSON


def test_a_split_that_leaves_a_class_out_of_test_is_one_line(tmp_path):
    root = folders(tmp_path, per_class=20)
    with pytest.raises(StageError, match=r"^class '\d' has 20 usable image\(s\), and data.test_fraction=0.01 leaves none of "
                                         r"them in test; add other images of it \(identical files always land together\), or raise "
                                         r"data.test_fraction in params.yaml$"):
        scan(root, None, 0.01, 0.0, workers=1)
    with pytest.raises(StageError, match=r"leaves none of them in train; .* lower data.test_fraction"):
        scan(root, None, 0.99, 0.0, workers=1)
