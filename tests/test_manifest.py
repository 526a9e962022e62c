import io
import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from hotdog.core.errors import StageError
from hotdog.core.params import load_params
from hotdog.core.schema import MANIFEST, classes_of, read_table, write_table
from hotdog.data.manifest import Item, list_images, probe_image, scan
from stages import manifest as manifest_stage


def run_manifest():
    """The manifest stage in the tiny project: (its summary, the paths)."""
    manifest_stage.main()
    p = load_params(*manifest_stage.PARAMS)
    return json.loads(p.paths.manifest_summary.read_text()), p.paths


def test_manifest_rows_and_rejects(tiny_project):
    summary, paths = run_manifest()
    train = read_table(paths.manifest_file("train"), MANIFEST, "manifest")
    assert summary["train"] == {"images": 12, "rejected": 1, "per_class": {"hotdog": 6, "not-hotdog": 6}}
    assert summary["test"] == {"images": 8, "rejected": 1, "per_class": {"hotdog": 4, "not-hotdog": 4}}
    assert summary["classes"] == ["hotdog", "not-hotdog"] and summary["layout"] == "split"
    assert summary["test_fraction"] is None and summary["duplicates"] == {"copies": 0, "left_out_of_train": 0}
    assert classes_of(train, paths.manifest_file("train"), "manifest") == ("hotdog", "not-hotdog")
    rows = train.to_pylist()
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    # Grey, palette, RGBA and CMYK images are kept (converted when loaded), not rejected.
    assert {"RGB", "L", "P", "RGBA", "CMYK"} <= {r["mode"] for r in rows}
    assert {"PNG", "JPEG"} == {r["format"] for r in rows}
    first = rows[0]
    assert first["path"] == "train/hotdog/0.png" and first["label"] == 0
    assert (first["width"], first["height"]) == (40, 30) and len(first["sha1"]) == 40
    assert all(r["label"] == (r["class_name"] == "not-hotdog") for r in rows)
    rejects = paths.rejects.read_text().splitlines()
    assert rejects[0] == "split,path,reason"
    assert rejects[1].startswith("train,train/not-hotdog/1000.png,") and "truncated" in rejects[1].lower()
    assert len(rejects) == 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP"])
def test_pixel_check_rejects_truncated_and_corrupt_files(tmp_path, fmt):
    """The cheap check (CRCs for PNG, a 1/8-scale decode for JPEG) catches what a full decode does."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)).save(buf, fmt)
    good = buf.getvalue()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    files = {"good": good, "half": good[: len(good) // 2], "short": good[:-40], "flipped": bytes(flipped)}
    (tmp_path / "train/hotdog").mkdir(parents=True)
    for name, data in files.items():
        (tmp_path / "train/hotdog" / name).write_bytes(data)
    probes = {name: probe_image(tmp_path, Item(f"train/hotdog/{name}", 0, "hotdog", "train")) for name in files}
    assert probes["good"].row["width"] == 160 and probes["good"].row["height"] == 120
    assert probes["good"].row["format"] == fmt
    assert probes["half"].reason and probes["short"].reason
    if fmt == "PNG":  # only PNG checksums its pixel data; a flipped JPEG or BMP byte decodes
        assert "checksum" in probes["flipped"].reason


def test_same_input_gives_identical_bytes(tiny_project):
    _, paths = run_manifest()
    for workers in (1, 2):
        table = scan(paths.images, None, 0.2, 0.2, workers).tables["train"]
        write_table(table, tiny_project / f"again-{workers}.parquet", MANIFEST)
        assert (tiny_project / f"again-{workers}.parquet").read_bytes() == paths.manifest_file("train").read_bytes()


def test_parallel_probe_matches_serial(tiny_project):
    items = list_images(tiny_project / "data/hotdog", ("hotdog", "not-hotdog"), "train")
    serial = [probe_image(tiny_project / "data/hotdog", item) for item in items]
    from hotdog.data.manifest import probe_all

    assert probe_all(tiny_project / "data/hotdog", items * 10, workers=2) == serial * 10


def test_too_many_rejects_fail_and_write_nothing(tiny_project):
    (tiny_project / "params.yaml").write_text(
        (tiny_project / "params.yaml").read_text().replace("max_reject_fraction: 0.2", "max_reject_fraction: 0.05"))
    with pytest.raises(StageError, match=r"^1 of 13 images in split 'train' cannot be used, more than "
                                         r"manifest.max_reject_fraction=0.05: train/not-hotdog/1000.png \(.*\); "
                                         r"replace or remove them, or raise manifest.max_reject_fraction in params.yaml$"):
        run_manifest()
    assert not (tiny_project / "data/manifest").exists()
    assert not (tiny_project / "metrics").exists()
    # Since nothing is written, the error names the first few rejects, not only the first.
    for i in range(4):
        (tiny_project / f"data/hotdog/train/hotdog/notes-{i}.png").write_bytes(b"not a picture")
    with pytest.raises(StageError, match=r"^5 of 17 images .*: train/hotdog/notes-0.png \(not an image Pillow can "
                                         r"read \(UnidentifiedImageError\)\); train/hotdog/notes-1.png \(.*\); "
                                         r"train/hotdog/notes-2.png \(.*\); and 2 more; replace or remove them"):
        run_manifest()


def test_a_class_with_no_usable_image_in_a_split_names_its_rejects(tmp_path):
    # rejects.csv is written only when the stage passes: the error itself names what was left out.
    for s, split in enumerate(("train", "test")):
        for c, cls in enumerate(("cat", "dog")):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), (i, s, c)).save(tmp_path / split / cls / f"{i}.png")
    for i in range(2):
        (tmp_path / f"test/dog/{i}.png").write_bytes(b"not a picture")
    with pytest.raises(StageError, match=r"^split 'test' has no usable 'dog' image: all 2 could not be used: "
                                         r"test/dog/0.png \(not an image Pillow can read \(UnidentifiedImageError\)\); "
                                         r"test/dog/1.png \(.*\); replace them$"):
        scan(tmp_path, None, 0.2, 1.0, workers=1)
    # A class whose train images are all copies of test images: each named, as a copy.
    for i in range(2):
        Image.new("RGB", (8, 8), (i, 1, 1)).save(tmp_path / f"test/dog/{i}.png")
        shutil.copy(tmp_path / f"test/cat/{i}.png", tmp_path / f"train/cat/{i}.png")
    with pytest.raises(StageError, match=r"^split 'train' has no usable 'cat' image: all 2 could not be used: "
                                         r"train/cat/0.png \(identical to test/cat/0.png \(same SHA-1\), which is in "
                                         r"test\); train/cat/1.png"):
        scan(tmp_path, None, 0.2, 1.0, workers=1)


def test_a_class_left_out_of_a_split_names_its_images_that_could_not_be_used(tmp_path):
    # Class folders alone: the class's one image that would have gone to test is unreadable,
    # which "raise data.test_fraction" alone did not tell.
    for cls, n in (("cat", 30), ("dog", 1)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog/broken.png").write_bytes(b"not a picture")
    with pytest.raises(StageError, match=r"^class 'dog' has 1 usable image\(s\) \(and 1 that could not be used: "
                                         r"dog/broken.png \(not an image Pillow can read .*\)\), and "
                                         r"data.test_fraction=0.5 leaves none of them in (test|train); add other images "
                                         r"of it \(identical files always land together\), or replace those, or"):
        scan(tmp_path, None, 0.5, 1.0, workers=1)


def test_a_reject_reads_the_same_every_run(tmp_path):
    # rejects.csv is a DVC output: Pillow's own message for a file it cannot identify names
    # its BytesIO by memory address, which would change the file, and so re-run everything
    # after the manifest, on every run.
    (tmp_path / "train/hotdog").mkdir(parents=True)
    (tmp_path / "train/hotdog/x.png").write_bytes(b"not a picture")
    item = Item("train/hotdog/x.png", 0, "hotdog", "train")
    first = probe_image(tmp_path, item).reason
    assert first == "not an image Pillow can read (UnidentifiedImageError)" and " at 0x" not in first
    assert probe_image(tmp_path, item).reason == first


@pytest.mark.parametrize("size", [(1, 51), (4000, 79)])
def test_an_image_too_long_and_thin_to_resize_is_rejected(tmp_path, size):
    # Its shorter side would be resized to 256 px and the longer in proportion: 1 x 50,000
    # px, a few hundred bytes, would take 9 GiB in the decode stage.
    (tmp_path / "train/hotdog").mkdir(parents=True)
    Image.new("RGB", size).save(tmp_path / "train/hotdog/strip.png")
    Image.new("RGB", (size[0], max(1, size[0] // 50))).save(tmp_path / "train/hotdog/wide.png")  # 50:1 is kept
    strip = probe_image(tmp_path, Item("train/hotdog/strip.png", 0, "hotdog", "train"))
    ratio = max(size) / min(size)
    assert strip.row is None and strip.reason == (f"{size[0]} x {size[1]} px: its longer side is {ratio:,.1f} times "
                                                  "its shorter, more than the 50 an image may have; crop it to the "
                                                  "part to classify")
    assert probe_image(tmp_path, Item("train/hotdog/wide.png", 0, "hotdog", "train")).reason is None


def test_missing_class_folder(tiny_project):
    shutil.rmtree(tiny_project / "data/hotdog/test/hotdog")
    with pytest.raises(StageError, match=r"data/hotdog/test/hotdog is missing"):
        run_manifest()


def test_schema_is_checked_on_read(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["a.png"], "label": [0]}), tmp_path / "train.parquet")
    with pytest.raises(StageError, match=r"written by another version, run `dvc repro manifest`"):
        read_table(tmp_path / "train.parquet", MANIFEST, "manifest")
    with pytest.raises(StageError, match=r"is missing; run `dvc repro manifest`"):
        read_table(tmp_path / "test.parquet", MANIFEST, "manifest")


def test_decoded_files_are_checked_on_read(tmp_path):
    from hotdog.core.schema import DECODED, read_arrow

    with pytest.raises(StageError, match=r"is missing; run `dvc repro decode` first"):
        read_arrow(tmp_path / "train.arrow", DECODED, "decode")
    (tmp_path / "train.arrow").write_bytes(b"not arrow")
    with pytest.raises(StageError, match=r"not a readable Arrow file"):
        read_arrow(tmp_path / "train.arrow", DECODED, "decode")
