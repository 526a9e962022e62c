"""The download and weights stages: safe extraction, layout checks, and runs against a
real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import tarfile
import unicodedata
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from ruamel.yaml import YAML
from servers import serve_directory
from synthetic import class_files, write_tree, write_zip_declaring

from hotdog.core.errors import StageError
from hotdog.core.names import CLASSES, SPLITS
from hotdog.data import fetch
from hotdog.data.archive import extract
from hotdog.data.manifest import scan
from hotdog.data.source import pack
from hotdog.model.weights import check_state_dict, load_weights, resnet18_shapes
from stages import weights

REPO = Path(__file__).resolve().parents[1]
GOOD = {f"{split}/{cls}/{i}.png": b"png" for split in SPLITS for cls in CLASSES for i in (0, 1)}
LIMIT = 1 << 30  # max_bytes for extract(): far above what these archives hold


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BASE_DELAY", 0.001)


def make_tar(path: Path, members: dict[str, bytes], mode: str = "w:gz",
             links: dict[str, str] | None = None, hardlinks: dict[str, str] | None = None) -> Path:
    """A tar (compressed as `mode` says) holding these member names as given, and these
    symbolic and hard links (name -> target)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for kind, named in ((tarfile.SYMTYPE, links), (tarfile.LNKTYPE, hardlinks)):
            for name, target in (named or {}).items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                archive.addfile(info)
    return path


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip holding exactly these member names, written as given (no normalising)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


def write_params(root: Path, **sections: dict) -> None:
    """The repo's params.yaml with some sections replaced, written into `root`."""
    yaml = YAML(typ="safe", pure=True)
    params = yaml.load((REPO / "params.yaml").read_text())
    params.update(sections)
    with (root / "params.yaml").open("w") as f:
        yaml.dump(params, f)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def written(work: Path) -> list[str]:
    """What a stage run in `work` left there, besides params.yaml and the working state
    under paths.state (the run lock), which is no output."""
    return [f for f in files_under(work) if f != "params.yaml" and not f.startswith(".hotdog/")]


# --- extraction ---------------------------------------------------------------------


@pytest.mark.parametrize("evil", ["../evil", "hotdog/../../evil", "/etc/x", "C:/x", "..\\evil", "./C:/x"])
def test_unsafe_members_are_refused_before_writing(tmp_path: Path, evil: str) -> None:
    archive = make_zip(tmp_path / "raw" / "hotdog.zip", {**GOOD, evil: b"boom"})
    images = tmp_path / "data" / "hotdog"
    with pytest.raises(StageError) as err:
        extract(archive, images, LIMIT)
    assert repr(evil) in str(err.value) and str(archive) in str(err.value)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "data" / "evil").exists()
    assert not images.parent.exists() or list(images.parent.iterdir()) == []


def test_a_missing_class_folder_is_named(tmp_path: Path) -> None:
    members = {k: v for k, v in GOOD.items() if not k.startswith("test/not-hotdog/")}
    archive = make_zip(tmp_path / "hotdog.zip", members)
    images = tmp_path / "data" / "hotdog"
    with pytest.raises(StageError) as err:
        extract(archive, images, LIMIT)
    assert "train/ and test/ hold different class folders (only in train/: ['not-hotdog']; only in test/: none)" \
        in str(err.value)
    assert str(archive) in str(err.value)
    assert not images.parent.exists() or list(images.parent.iterdir()) == []  # no images folder, no temp folder


def test_an_empty_class_folder_is_refused(tmp_path: Path) -> None:
    members = {k: v for k, v in GOOD.items() if not k.startswith("train/hotdog/")}
    archive = make_zip(tmp_path / "hotdog.zip", {**members, "train/hotdog/": b""})
    with pytest.raises(StageError, match=r"only in train/: none; only in test/: \['hotdog'\]"):
        extract(archive, tmp_path / "images", LIMIT)
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("source", ["folder", "zip"])
def test_a_class_folder_with_nothing_in_it_is_refused_unless_data_classes_leaves_it_out(tmp_path: Path, source) -> None:
    # It dropped out of the classes without a word; with data.classes naming it, the error
    # said it was "no class folder". torchvision's ImageFolder refuses one too.
    members = {f"photos/{cls}/{i}.png": b"png" for cls in ("cat", "dog") for i in range(2)}
    if source == "folder":
        write_tree(tmp_path / "data", members)
        (tmp_path / "data/photos/empty/.thumbnails").mkdir(parents=True)  # junk is no content
        (tmp_path / "data/photos/cat/indoor").mkdir()  # an empty folder inside a class is no class
        where = tmp_path / "data"

        def run(classes):
            return pack(where, tmp_path / "packed.zip", LIMIT, classes)
    else:
        where = make_zip(tmp_path / "photos.zip", {"photos/": b"", "photos/empty/": b"", "photos/cat/indoor/": b"",
                                                   **members})

        def run(classes):
            return extract(where, tmp_path / "images", LIMIT, classes)
    with pytest.raises(StageError, match=rf"^{where}: class folder 'photos/empty' is empty; add its images, or "
                                         r"remove it$"):
        run(None)
    with pytest.raises(StageError, match=r"class folder 'photos/empty' is empty; .* \(or leave it out of "
                                         r"data.classes in params.yaml\)$"):
        run(["cat", "empty", "dog"])
    run(["cat", "dog"])  # the empty one is not asked for


def test_a_top_folder_becomes_the_images_folder(tmp_path: Path) -> None:
    members = {f"hotdog/{name}": data for name, data in GOOD.items()}
    junk = {"__MACOSX/hotdog/train/._0.png": b"x", "hotdog/train/hotdog/.DS_Store": b"x"}
    archive = make_zip(tmp_path / "hotdog.zip", {"hotdog/": b"", **members, **junk})
    images = tmp_path / "data" / "hotdog"
    extract(archive, images, LIMIT)
    assert files_under(images) == sorted(GOOD)
    assert (images / "train" / "hotdog" / "0.png").read_bytes() == b"png"
    assert sorted(p.name for p in images.parent.iterdir()) == ["hotdog"]


@pytest.mark.parametrize("top", ["flowers/flowers/", "archive/dataset/v2/"])
@pytest.mark.parametrize("split", [True, False], ids=["split", "folders"])
def test_the_layout_may_sit_in_nested_single_folders(tmp_path: Path, top: str, split: bool) -> None:
    # Kaggle's downloads often nest the data set one folder deeper than its zip's name:
    # flowers.zip holds flowers/flowers/daisy/…. Each level with a single folder is dropped.
    given = GOOD if split else {k.removeprefix("train/"): v for k, v in GOOD.items() if k.startswith("train/")}
    archive = make_zip(tmp_path / "data.zip", {f"{top}README.md": b"hi", **{top + k: v for k, v in given.items()}})
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.prefix == top and layout.kind == ("split" if split else "folders")
    assert files_under(tmp_path / "images") == sorted(given)


@pytest.mark.parametrize("split", [True, False], ids=["split", "folders"])
def test_images_in_folders_inside_a_class_belong_to_it(tmp_path: Path, split: bool) -> None:
    # People keep photos in folders by date or place inside a class folder; torchvision's
    # ImageFolder and Keras read those as the class's too, and so do we, keeping the paths.
    files = class_files(("cat", "dog"), {"train": 4, "test": 2} if split else 6, top="pets", size=(8, 8))
    nested = {}
    for i, (name, data) in enumerate(sorted(files.items())):
        folder, image = name.rsplit("/", 1)
        nested[f"{folder}/{['', '2019/', '2019/beach/'][i % 3]}{image}"] = data
    archive = make_zip(tmp_path / "pets.zip", {**nested, "pets/dog/2019/notes.txt": b"x"})
    images = tmp_path / "images"
    layout = extract(archive, images, LIMIT)
    assert layout.classes == ("cat", "dog") and layout.left_out == ("pets/dog/2019/notes.txt",)
    assert files_under(images) == sorted(name.removeprefix("pets/") for name in nested)
    result = scan(images, None, 0.5, 0.0, workers=1)
    rows = [row for table in result.tables.values() for row in table.to_pylist()]
    assert sorted(row["path"] for row in rows) == files_under(images)
    assert all(row["class_name"] == row["path"].split("/")[1 if split else 0] for row in rows)
    assert {row["path"].count("/") for row in rows} == ({2, 3, 4} if split else {1, 2, 3})


def test_the_line_naming_the_classes_names_the_folders_they_are_in(tmp_path: Path, capsys) -> None:
    # One class folder of folders is, to the layout, a top folder holding classes: only the
    # line shows that cat/'s indoor/ and outdoor/ became the classes.
    members = {f"photos/cat/{where}/{i}.png": b"png" for where in ("indoor", "outdoor") for i in range(2)}
    layout = extract(make_zip(tmp_path / "cat.zip", members), tmp_path / "images", LIMIT)
    assert layout.classes == ("indoor", "outdoor") and layout.prefix == "photos/cat/"
    assert capsys.readouterr().out.splitlines()[-1] == (f"extracted 4 files of 2 classes (indoor, outdoor) in "
                                                        f"photos/cat/ into {tmp_path / 'images'}")
    extract(make_zip(tmp_path / "flat.zip", {k.removeprefix("photos/cat/"): v for k, v in members.items()}),
            tmp_path / "flat", LIMIT)
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"(indoor, outdoor) into {tmp_path / 'flat'}")


def test_a_class_of_non_images_in_a_deeper_folder_is_still_named(tmp_path: Path) -> None:
    members = {"cat/a.png": b"x", "cat/b.png": b"x", "dog/2019/a.heic": b"y", "dog/2019/b.heic": b"y"}
    with pytest.raises(StageError, match=r"class folder 'dog' holds 2 file\(s\) but no image named as one"):
        extract(make_zip(tmp_path / "pets.zip", members), tmp_path / "images", LIMIT)


def test_splits_at_the_archive_root_work_too(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "hotdog.zip", {**GOOD, "README.txt": b"hi"})
    images = tmp_path / "images"
    images.mkdir()
    (images / "stale.png").write_bytes(b"old")  # a previous extraction is replaced
    extract(archive, images, LIMIT)
    assert files_under(images) == sorted(GOOD)


@pytest.mark.parametrize("spell", [lambda n: n.replace("/", "\\"), lambda n: "./" + n.replace("/", "/./", 1),
                                   lambda n: n.replace("/", "//")], ids=["backslashes", "dot", "double-slash"])
def test_member_names_are_read_as_plain_paths(tmp_path: Path, spell) -> None:
    # Old Windows zip tools write backslashes; others write "./" or "//" inside a name. Read as
    # given, "train/./hotdog/0.png" would make a class named "." and the others a wrong depth.
    archive = make_zip(tmp_path / "hotdog.zip", {spell(name): data for name, data in GOOD.items()})
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.classes == tuple(sorted(CLASSES)) and layout.kind == "split"
    assert files_under(tmp_path / "images") == sorted(GOOD)


def zip_with_raw_names(path: Path, names: dict[bytes, bytes]) -> Path:
    """A zip whose member names are these bytes, without the UTF-8 flag, as Info-ZIP's `zip`
    on Linux writes them (Python's zipfile flags any name it cannot write as ASCII): each is
    written under an ASCII stand-in of the same length, then its bytes are put in place."""
    stand_ins = {raw: chr(ord("A") + i).encode() * len(raw) for i, raw in enumerate(names)}
    make_zip(path, {stand_ins[raw].decode(): data for raw, data in names.items()})
    data = path.read_bytes()
    for raw, stand_in in stand_ins.items():
        assert data.count(stand_in) == 2  # the local header and the central directory
        data = data.replace(stand_in, raw)
    path.write_bytes(data)
    return path


def test_utf8_names_without_the_zips_flag_are_read_as_utf8(tmp_path: Path) -> None:
    # `zip -r photos.zip photos` on Linux: the class "grüne Äpfel" came out as "gr├╝ne ├äpfel"
    # (cp437, the format's default) in every output, the model and its answers.
    members = {f"{cls}/{i}.png".encode(): b"png" for cls in ("grüne Äpfel", "crème brûlée", "red") for i in range(2)}
    # A name of an old DOS/Windows tool, truly cp437 ("ü" is one byte, 0x81): no valid UTF-8.
    members["müsli/0.png".encode("cp437")] = members["müsli/1.png".encode("cp437")] = b"png"
    archive = zip_with_raw_names(tmp_path / "photos.zip", members)
    with zipfile.ZipFile(archive) as z:
        assert not any(i.flag_bits & 0x800 for i in z.infolist())
        assert "gr├╝ne ├äpfel/0.png" in z.namelist()  # what zipfile itself reads
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.classes == ("crème brûlée", "grüne Äpfel", "müsli", "red")
    assert "grüne Äpfel/1.png" in files_under(tmp_path / "images")
    # Read so, two names may become one ("ü" as cp437 and as UTF-8): refused, not one file
    # written over the other.
    clash = zip_with_raw_names(tmp_path / "clash.zip", {**members, "müsli/0.png".encode(): b"other"})
    with pytest.raises(StageError, match=r"both name the file 'müsli/0.png'; refusing to extract"):
        extract(clash, tmp_path / "clashed", LIMIT)


@pytest.mark.parametrize("members, line", [
    # Read as given they were two files; read as plain paths they are one, and which to take
    # is a guess.
    ({**GOOD, "train//hotdog/0.png": b"other"}, r"members 'train/hotdog/0.png' and 'train//hotdog/0.png' both name"),
    ({**GOOD, "train/hotdog/0.png/1.png": b"x"}, r"train/hotdog/0.png is both a file and a folder; rename one"),
])
def test_names_that_clash_are_refused_before_writing(tmp_path: Path, members: dict, line: str) -> None:
    with pytest.raises(StageError, match=line):
        extract(make_zip(tmp_path / "hotdog.zip", members), tmp_path / "images", LIMIT)
    assert not (tmp_path / "images").exists()


def test_windows_folders_and_photo_tools_caches_are_not_files(tmp_path: Path, capsys) -> None:
    # A Windows tool writes a folder as "train\\hotdog\\"; Synology and photo tools keep
    # thumbnails in @eaDir/ and hidden folders inside a class folder, which is read at any
    # depth: none of them is a file of the data set, nor counted as left out.
    caches = {"train/hotdog/@eaDir/0.png/SYNOPHOTO_THUMB_M.jpg": b"t", "test/hotdog/.thumbnails/0.png": b"t",
              "train/not-hotdog/.picasaoriginals/1.png": b"o"}
    archive = make_zip(tmp_path / "hotdog.zip", {"train\\": b"", "train\\hotdog\\": b"", **GOOD, **caches})
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert files_under(tmp_path / "images") == sorted(GOOD) and layout.left_out == ()
    assert "left out" not in capsys.readouterr().out


@pytest.mark.parametrize("members", [
    {f"dataset/{split}_set/{split}_set/{cls}/0.jpg": b"x" for split in ("training", "test") for cls in ("cats", "dogs")},
    {f"{split}/{cls}/{i}.jpg": b"x" for split in ("Training", "Testing") for cls in ("glioma", "none") for i in (0, 1)},
], ids=["kaggle-cats-and-dogs", "capitalised"])
def test_split_folders_the_layout_does_not_know_are_not_taken_for_classes(tmp_path: Path, members: dict) -> None:
    # Images in folders inside a class folder are the class's; inside a folder named as a
    # split they are a split's, and "Training against Testing" would be a silent misreading.
    with pytest.raises(StageError, match=r"looks like a split, not a class, and holds folders of images \(e\.g\. "):
        extract(make_zip(tmp_path / "data.zip", members), tmp_path / "images", LIMIT)
    flat = {f"{cls}/{i}.jpg": b"x" for cls in ("train", "bus") for i in (0, 1)}  # a class of locomotives
    assert extract(make_zip(tmp_path / "vehicles.zip", flat), tmp_path / "vehicles", LIMIT).classes == ("bus", "train")


def test_files_not_named_as_images_are_left_out_and_counted(tmp_path: Path, capsys) -> None:
    # TensorFlow's flower_photos, the set Keras's own-images tutorial uses, keeps a
    # LICENSE.txt beside its class folders; people's folders hold notes, Windows' Thumbs.db
    # and phones' HEIC photos. None is an image by name, and none stops the layout.
    images = {f"flower_photos/{cls}/{i}.{ext}": b"img" for cls in ("daisy", "roses")
              for i, ext in enumerate(["jpg", "JPG", "jpeg", "png"])}
    others = ["flower_photos/LICENSE.txt", "flower_photos/daisy/Thumbs.db", "flower_photos/roses/IMG_1.HEIC",
              "flower_photos/roses/notes.txt", "flower_photos/roses/README"]
    archive = make_zip(tmp_path / "flower_photos.zip", {**images, **{name: b"x" for name in others}})
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.classes == ("daisy", "roses") and layout.prefix == "flower_photos/"
    assert files_under(tmp_path / "images") == sorted(name.removeprefix("flower_photos/") for name in images)
    assert layout.left_out == tuple(sorted(others))
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (f"{archive}: left out 5 file(s) not named as images (2 .txt, 1 .db, 1 .heic, 1 without one; "
                       "e.g. flower_photos/LICENSE.txt); the images taken end in .jpg .jpeg .jpe .jfif .png .bmp "
                       ".gif .webp .tif .tiff .ppm .pgm .pbm .pnm: convert any photo among the others to JPEG or PNG "
                       "to use it")
    # A class folder of no images at all would drop out of the classes: that stops the stage.
    archive = make_zip(tmp_path / "phone.zip", {**images, "flower_photos/tulips/IMG_2.HEIC": b"x",
                                                "flower_photos/tulips/IMG_3.HEIC": b"x"})
    with pytest.raises(StageError, match=r"phone.zip: class folder 'tulips' holds 2 file\(s\) but no image named as "
                                         r"one \(2 .heic; e.g. flower_photos/tulips/IMG_2.HEIC\); convert them"):
        extract(archive, tmp_path / "phone", LIMIT)
    assert not (tmp_path / "phone").exists()
    # So does one in a split, which would otherwise read as a class missing from it.
    split = {f"{s}/{cls}/0.jpg": b"img" for s in ("train", "test") for cls in ("daisy", "roses")}
    archive = make_zip(tmp_path / "split.zip", {**split, "test/tulips/IMG_2.HEIC": b"x", "train/tulips/0.jpg": b"x"})
    with pytest.raises(StageError, match=r"split.zip: class folder 'test/tulips' holds 1 file\(s\) but no image"):
        extract(archive, tmp_path / "phone", LIMIT)
    # A data set of no images at all says what it holds instead.
    archive = make_zip(tmp_path / "heic.zip", {"a/1.heic": b"x", "b/2.HEIC": b"x", "b/notes.txt": b"x"})
    with pytest.raises(StageError, match=r"heic.zip: no images found, only 3 other file\(s\) \(2 .heic, 1 .txt\); "
                                         r"expected class folders of images ending in .jpg .jpeg"):
        extract(archive, tmp_path / "none", LIMIT)
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("held_out", ["val", "valid", "validation"])
def test_a_val_folder_beside_train_is_the_test_split(tmp_path: Path, held_out: str, capsys) -> None:
    # Ultralytics' classification sets come as train/ and val/, fastai's as train/ and valid/,
    # Hugging Face's as train/ and validation/: each is unpacked as train/ and test/.
    members = {f"pets/{split}/{cls}/{i}.png": f"{split}{cls}{i}".encode()
               for split in ("train", held_out) for cls in ("cat", "dog") for i in range(2)}
    archive = make_zip(tmp_path / "pets.zip", members)
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.kind == "split" and layout.held_out == held_out and layout.classes == ("cat", "dog")
    assert files_under(tmp_path / "images") == sorted(
        name.removeprefix("pets/").replace(f"{held_out}/", "test/") for name in members)
    assert (tmp_path / "images/test/dog/1.png").read_bytes() == f"{held_out}dog1".encode()
    assert capsys.readouterr().out.splitlines()[-1] == f"{archive}: {held_out}/ is the test split"


def test_test_is_the_test_split_when_val_is_there_too(tmp_path: Path, capsys) -> None:
    members = {f"{split}/{cls}/{i}.png": b"png" for split in ("train", "val", "test", "validation")
               for cls in ("cat", "dog") for i in range(2)}
    archive = make_zip(tmp_path / "pets.zip", members)
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.held_out == "test" and layout.unused == ("val", "validation")
    assert files_under(tmp_path / "images") == sorted(m for m in members if m.startswith(("train/", "test/")))
    assert capsys.readouterr().out.splitlines()[-1] == f"{archive}: test/ is the test split; left out: val/, validation/"
    # Its class folders must match train's, as test/'s must.
    members = {k: v for k, v in members.items() if not k.startswith("test/")}
    members = {k: v for k, v in members.items() if not k.startswith("val/dog/")}
    with pytest.raises(StageError, match=r"train/ and val/ hold different class folders \(only in train/: \['dog'\]; "
                                         r"only in val/: none\)"):
        extract(make_zip(tmp_path / "uneven.zip", members), tmp_path / "uneven", LIMIT)


@pytest.mark.parametrize("held_out", ["test", "val"])
def test_a_split_inside_each_class_folder_goes_on_top(tmp_path: Path, held_out: str, capsys) -> None:
    # Some keep a data set's split the other way round: cat/train/, cat/test/. Read as class
    # folders, its test photos would be trained on and the split lost; it is kept, on top.
    photos = iter(class_files(("cat", "dog"), 6, size=(8, 8)).values())  # real PNGs, each its own
    members = {f"pets/{cls}/{split}/{i}.png": next(photos)
               for cls in ("cat", "dog") for split in ("train", held_out) for i in range(2)}
    deeper = {"pets/cat/train/2019/9.png": next(photos), "pets/dog/valid/0.png": next(photos)}  # by date; unused
    beside = {"pets/cat/cover.png": next(photos), "pets/dog/train/notes.txt": b"x"}  # beside the split, as a README
    archive = make_zip(tmp_path / "pets.zip", {**members, **deeper, **beside})
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.kind == "split" and layout.inside and layout.held_out == held_out
    assert layout.classes == ("cat", "dog") and layout.unused == ("valid",)
    expected = {"/".join(("train" if split == "train" else "test", cls, rest)): name
                for name in [*members, "pets/cat/train/2019/9.png"] for _, cls, split, rest in [name.split("/", 3)]}
    assert files_under(tmp_path / "images") == sorted(expected)
    assert all((tmp_path / "images" / path).read_bytes() == {**members, **deeper}[name]
               for path, name in expected.items())
    assert capsys.readouterr().out.splitlines()[-2] == (
        f"{archive}: each class folder's train/ and {held_out}/ are the split, unpacked as train/<class>/ and "
        "test/<class>/; left out: valid/")
    result = scan(tmp_path / "images", None, 0.5, 0.0, workers=1)
    assert {split: sorted({row["class_name"] for row in table.to_pylist()})
            for split, table in result.tables.items()} == {"train": ["cat", "dog"], "test": ["cat", "dog"]}


@pytest.mark.parametrize("members, line", [
    ({**{f"cat/{s}/{i}.png": b"x" for s in ("train", "test") for i in (0, 1)}, "dog/0.png": b"y", "dog/1.png": b"y"},
     r"class folder 'dog' holds no train/ or test/ of images, but 'cat' holds its own train/ and test/; give every "
     r"class folder both, or none"),
    ({**{f"cat/{s}/{i}.png": b"x" for s in ("train", "val") for i in (0, 1)}, "dog/train/0.png": b"y",
      "dog/val/0.heic": b"y"}, r"class folder 'dog' holds no val/ of images, but 'cat' holds its own train/ and val/"),
])
def test_a_split_inside_only_some_class_folders_is_refused(tmp_path: Path, members: dict, line: str) -> None:
    # Which of the others' photos are test photos would be a guess.
    with pytest.raises(StageError, match=line):
        extract(make_zip(tmp_path / "pets.zip", members), tmp_path / "images", LIMIT)
    assert not (tmp_path / "images").exists()


def test_a_folder_with_a_split_inside_its_class_folders_is_packed_and_unpacked(tmp_path: Path) -> None:
    given = class_files(("cat", "dog"), {"train": 2, "test": 1}, top="inside")  # inside/<split>/<class>/…
    write_tree(tmp_path, {f"inside/{cls}/{split}/{image}": data
                          for name, data in given.items() for _, split, cls, image in [name.split("/")]})
    folder = tmp_path / "inside"
    assert pack(folder, tmp_path / "packed.zip", LIMIT, None) == 6
    extract(tmp_path / "packed.zip", tmp_path / "images", LIMIT)
    assert files_under(tmp_path / "images") == [f"{s}/{c}/{i}.png" for s, n in (("test", 1), ("train", 2))
                                                for c in ("cat", "dog") for i in range(n)]


@pytest.mark.parametrize("top", ["", "signs/"])
def test_class_folders_alone_are_extracted_as_they_are(tmp_path: Path, top: str) -> None:
    members = {f"{top}{cls}/{i}.png": b"png" for cls in ("0", "1", "2") for i in range(3)}
    archive = make_zip(tmp_path / "signs.zip", {**members, "__MACOSX/x/._0.png": b"x"})
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.kind == "folders" and layout.classes == ("0", "1", "2") and layout.prefix == top
    assert files_under(tmp_path / "images") == sorted(m[len(top):] for m in members)


def test_only_the_classes_data_classes_picks_are_extracted(tmp_path: Path) -> None:
    members = {f"{cls}/{i}.png": b"png" for cls in ("cat", "dog", "fox") for i in range(2)}
    archive = make_zip(tmp_path / "pets.zip", members)
    extract(archive, tmp_path / "images", LIMIT, ["fox", "cat"])
    assert files_under(tmp_path / "images") == ["cat/0.png", "cat/1.png", "fox/0.png", "fox/1.png"]
    with pytest.raises(StageError, match=r"data.classes names 'cow', which is no class folder .* \(found: cat, dog, "
                                         r"fox\); correct data.classes in params.yaml$"):
        extract(archive, tmp_path / "other", LIMIT, ["cat", "cow"])
    assert not (tmp_path / "other").exists()


def test_data_classes_match_folder_names_in_either_unicode_form(tmp_path: Path) -> None:
    # macOS writes a folder's name decomposed ("e" + an accent); params.yaml holds what was
    # typed, composed. They look the same, and are taken as the same.
    nfd, nfc = (unicodedata.normalize(form, "crème brûlée") for form in ("NFD", "NFC"))
    assert nfd != nfc
    given = class_files((nfd, "donut"), {"train": 2, "test": 1}, top="desserts", size=(8, 8))
    archive = make_zip(tmp_path / "desserts.zip", given)
    extract(archive, tmp_path / "images", LIMIT, ["donut", nfc])
    assert sorted({name.split("/")[1] for name in files_under(tmp_path / "images")}) == sorted([nfd, "donut"])
    result = scan(tmp_path / "images", ["donut", nfc], 0.5, 0.0, workers=1)
    assert {row["class_name"] for row in result.tables["test"].to_pylist()} == {"donut", nfd}  # as the files spell it


@pytest.mark.parametrize("members, line", [
    ({"photos/a.png": b"x", "photos/b.png": b"y"},
     r"found 1 class folder\(s\) \(photos\); a classifier needs at least 2"),
    ({"cat/a.png": b"x", "cat/b.png": b"x", "dog/a.png": b"y"},
     r"class 'dog' has 1 image\(s\); each class needs at least 2"),
    ({"cat/a.png": b"x", "cat/b.png": b"x", "dog/a.png": b"y", "dog/b.png": b"y", "loose.png": b"z"},
     r"loose.png is at the wrong depth; expected <class>/<image>"),
    ({**GOOD, "train/x.png": b"z"}, r"train/x.png is at the wrong depth; expected train/<class>/<image>"),
    # data.url at one class's folder: images and no folder at all.
    ({"UP7.JPG": b"x", "b.png": b"y"}, r": no class folders, only images \(UP7.JPG, ...\); point data.url at the "
                                      r"folder that holds one folder of images per class, in params.yaml$"),
    ({**{f"d/{k}": v for k, v in GOOD.items()}, "d/test/x.png": b"z"},
     r"d/test/x.png is at the wrong depth; expected test/<class>/<image>"),
])
def test_a_bad_layout_is_one_line_and_writes_nothing(tmp_path: Path, members: dict, line: str) -> None:
    archive = make_zip(tmp_path / "data.zip", members)
    with pytest.raises(StageError, match=line) as err:
        extract(archive, tmp_path / "images", LIMIT)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{archive}: ")
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("mode, suffix", [("w:gz", "tgz"), ("w:bz2", "tar.bz2"), ("w:xz", "tar.xz"), ("w", "tar")])
def test_a_tar_unpacks_as_the_same_zip_does(tmp_path: Path, mode: str, suffix: str) -> None:
    # TensorFlow's flower_photos comes as a .tgz, as many data sets do; tar writes "./" first
    # when it was given ".".
    members = {f"./flower_photos/{cls}/{i}.jpg": f"{cls}{i}".encode() for cls in ("daisy", "roses") for i in range(3)}
    junk = {"./flower_photos/LICENSE.txt": b"CC-BY", "./flower_photos/daisy/._0.jpg": b"x"}
    archive = make_tar(tmp_path / f"flower_photos.{suffix}", {"./": b"", **members, **junk}, mode)
    layout = extract(archive, tmp_path / "from-tar", LIMIT, ["roses", "daisy"])
    same = make_zip(tmp_path / "flower_photos.zip", {k.removeprefix("./"): v for k, v in members.items()})
    assert layout == extract(same, tmp_path / "from-zip", LIMIT, ["roses", "daisy"])._replace(
        left_out=("flower_photos/LICENSE.txt",))
    assert files_under(tmp_path / "from-tar") == files_under(tmp_path / "from-zip") == sorted(
        k.removeprefix("./flower_photos/") for k in members)
    for name in files_under(tmp_path / "from-tar"):
        assert (tmp_path / "from-tar" / name).read_bytes() == (tmp_path / "from-zip" / name).read_bytes()


@pytest.mark.parametrize("links, hardlinks, unsafe, line", [
    ({"cat/2.png": "/etc/passwd"}, {}, {}, r"member 'cat/2.png' is a link or a special file, not an image; refusing"),
    ({}, {"dog/2.png": "dog/0.png"}, {}, r"member 'dog/2.png' is a link or a special file, not an image"),
    ({}, {"./cat\\2.png": "dog/0.png"}, {}, r"member './cat\\\\2.png' is a link or a special file, not an image"),
    ({}, {}, {"cat/../../evil.png": b"x"}, r"unsafe member 'cat/../../evil.png' \(absolute or outside the target"),
    ({}, {}, {"/abs/evil.png": b"x"}, r"unsafe member '/abs/evil.png'"),
])
def test_a_tar_with_a_link_or_a_member_outside_is_refused_before_writing(tmp_path: Path, links, hardlinks, unsafe,
                                                                        line: str) -> None:
    members = {f"{cls}/{i}.png": b"png" for cls in ("cat", "dog") for i in range(2)}
    archive = make_tar(tmp_path / "pets.tgz", {**members, **unsafe}, links=links, hardlinks=hardlinks)
    with pytest.raises(StageError, match=line) as err:
        extract(archive, tmp_path / "data" / "images", LIMIT)
    assert str(err.value).startswith(f"{archive}: ") and "\n" not in str(err.value)
    assert not (tmp_path / "data").exists() and not (tmp_path / "evil.png").exists()


def test_a_tar_member_whose_name_ends_in_a_separator_is_a_folder_and_never_read(tmp_path: Path) -> None:
    # A hard link's bytes are its target's, which check_size never counts: links to one big
    # member, each named "cat/<k>.png\\", must not become images (a zip bomb by links).
    members = {f"{cls}/{i}.png": b"png" for cls in ("cat", "dog") for i in range(2)}
    bomb = {f"cat/{k}.png\\": "blob.bin" for k in range(2, 12)}
    archive = make_tar(tmp_path / "pets.tgz", {**members, "blob.bin": bytes(1 << 20)}, hardlinks=bomb)
    layout = extract(archive, tmp_path / "images", 64 << 10)
    assert files_under(tmp_path / "images") == sorted(members) and layout.left_out == ("blob.bin",)


def test_a_tar_link_not_named_as_an_image_is_left_out(tmp_path: Path, capsys) -> None:
    # Data sets link a LICENSE or a README to a shared copy; a link to a folder elsewhere is
    # not followed either. Neither is written, and the line that counts what was left out
    # counts them.
    members = {f"{cls}/{i}.png": b"png" for cls in ("cat", "dog") for i in range(2)}
    archive = make_tar(tmp_path / "pets.tgz", members, links={"LICENSE": "../LICENSE", "dog/more": "/etc"})
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.classes == ("cat", "dog") and layout.left_out == ("LICENSE", "dog/more")
    assert files_under(tmp_path / "images") == sorted(members)
    assert not any(p.is_symlink() for p in (tmp_path / "images").rglob("*"))
    assert "left out 2 file(s) not named as images (2 without one; e.g. LICENSE)" in capsys.readouterr().out


def test_a_tar_is_known_by_its_start_not_by_what_its_last_member_holds(tmp_path: Path) -> None:
    # An uncompressed tar whose last member is a zip ends with a zip's end record, which is
    # all zipfile.is_zipfile looks for; and the first member's name may start with "PK".
    inner = make_zip(tmp_path / "extras.zip", {"x/0.png": b"x", "y/0.png": b"y"}).read_bytes()
    members = {f"PKLot/{cls}/{i}.png": b"png" for cls in ("empty", "occupied") for i in range(2)}
    archive = make_tar(tmp_path / "pklot.tar", {**members, "PKLot/extras.zip": inner}, "w")
    layout = extract(archive, tmp_path / "images", LIMIT)
    assert layout.classes == ("empty", "occupied") and layout.left_out == ("PKLot/extras.zip",)
    # A folder member named as an image, beside the image of that name, is no image.
    with tarfile.open(tmp_path / "twice.tar", "w") as out:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        folder = tarfile.TarInfo("PKLot/empty/0.png/")
        folder.type = tarfile.DIRTYPE
        out.addfile(folder)
    extract(tmp_path / "twice.tar", tmp_path / "twice", LIMIT)
    assert files_under(tmp_path / "twice") == sorted(m.removeprefix("PKLot/") for m in members)


def test_a_truncated_tar_or_no_archive_at_all_is_one_line(tmp_path: Path) -> None:
    members = {f"{cls}/{i}.png": os.urandom(4096) for cls in ("cat", "dog") for i in range(4)}
    whole = make_tar(tmp_path / "pets.tgz", members).read_bytes()
    (tmp_path / "cut.tgz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StageError, match=r"cut.tgz: corrupt tar archive \(.*\); check data.url and data.sha1"):
        extract(tmp_path / "cut.tgz", tmp_path / "images", LIMIT)
    # An uncompressed tar damaged after its 5th member: tarfile alone would stop there, silently.
    plain = make_tar(tmp_path / "pets.tar", members, "w").read_bytes()
    fifth = 5 * (512 + 4096)
    (tmp_path / "damaged.tar").write_bytes(plain[:fifth] + b"garbage!" * 64 + bytes(1024))
    with pytest.raises(StageError, match=r"damaged.tar: corrupt tar archive \(a damaged member header at byte 23040\)"):
        extract(tmp_path / "damaged.tar", tmp_path / "images", LIMIT)
    (tmp_path / "page.html").write_text("<html>not found</html>")
    with pytest.raises(StageError, match=r"page.html: neither a zip nor a tar archive; check data.url and data.sha1"):
        extract(tmp_path / "page.html", tmp_path / "images", LIMIT)
    assert not (tmp_path / "images").exists()


def test_a_corrupt_zip_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "hotdog.zip"
    archive.write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    with pytest.raises(StageError, match="corrupt zip archive"):
        extract(archive, tmp_path / "images", LIMIT)
    assert not (tmp_path / "images").exists()
    # A zip whose directory says it starts past its end: the seek fails with an errno (EINVAL)
    # that is the archive's fault, not the disk's.
    data = bytearray(make_zip(tmp_path / "whole.zip", GOOD).read_bytes())
    end = data.rfind(b"PK\x05\x06")
    struct.pack_into("<I", data, end + 16, struct.unpack_from("<I", data, end + 16)[0] + 100)
    archive.write_bytes(bytes(data))
    with pytest.raises(StageError, match=r"corrupt zip archive \(\[Errno 22\] Invalid argument\)"):
        extract(archive, tmp_path / "images", LIMIT)
    assert not (tmp_path / "images").exists()


# --- the download stage, end to end ---------------------------------------------------


def run_stage(module: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def hotdog_zip(tmp_path: Path) -> Path:
    members = {f"hotdog/{name}": data for name, data in GOOD.items()}
    return make_zip(tmp_path / "www" / "hotdog.zip", members)


def test_download_stage_fetches_and_extracts(tmp_path: Path, hotdog_zip: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    sha1 = hashlib.sha1(hotdog_zip.read_bytes()).hexdigest()
    with serve_directory(hotdog_zip.parent) as url:
        write_params(work, data={"url": f"{url}/hotdog.zip", "sha1": sha1, "classes": None, "test_fraction": 0.2})
        result = run_stage("stages.download", work)
    assert result.returncode == 0, result.stderr
    assert (work / "data/raw/hotdog.zip").read_bytes() == hotdog_zip.read_bytes()
    assert files_under(work / "data/hotdog") == sorted(GOOD)


def test_download_stage_fetches_and_extracts_a_tgz(tmp_path: Path) -> None:
    served = make_tar(tmp_path / "www" / "flower_photos.tgz", {f"flowers/{name}": data for name, data in GOOD.items()})
    work = tmp_path / "work"
    work.mkdir()
    sha1 = hashlib.sha1(served.read_bytes()).hexdigest()
    with serve_directory(served.parent) as url:
        write_params(work, data={"url": f"{url}/flower_photos.tgz", "sha1": sha1, "classes": None,
                                 "test_fraction": 0.2})
        result = run_stage("stages.download", work)
    assert result.returncode == 0, result.stderr
    # paths.zip keeps the archive as fetched, so `sha1sum` of it still gives data.sha1.
    assert (work / "data/raw/hotdog.zip").read_bytes() == served.read_bytes()
    assert files_under(work / "data/hotdog") == sorted(GOOD)


def test_download_stage_reports_a_sha1_mismatch(tmp_path: Path, hotdog_zip: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    wrong = "0" * 40
    with serve_directory(hotdog_zip.parent) as url:
        write_params(work, data={"url": f"{url}/hotdog.zip", "sha1": wrong, "classes": None, "test_fraction": 0.2})
        result = run_stage("stages.download", work)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: download: {url}/hotdog.zip: sha1 mismatch")
    assert wrong in lines[0] and hashlib.sha1(hotdog_zip.read_bytes()).hexdigest() in lines[0]
    assert written(work) == []


# --- the weights stage ----------------------------------------------------------------


@pytest.fixture
def run_weights_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Serve one file and run the weights stage's main() on it, in a scratch repo root."""

    def run(path: Path, sha256: str) -> Path:
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        monkeypatch.chdir(work)
        with serve_directory(path.parent) as url:
            write_params(work, weights={"url": f"{url}/{path.name}", "sha256": sha256})
            weights.main()
        return work / "data" / "weights" / "resnet18.pth"

    return run


def test_weights_stage_verifies_a_prefix_and_loads(tmp_path: Path, run_weights_stage) -> None:
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    served = tmp_path / "www" / "resnet18-abcd1234.pth"
    served.parent.mkdir()
    torch.save(state, served)
    sha256 = hashlib.sha256(served.read_bytes()).hexdigest()
    out = run_weights_stage(served, sha256[:8])
    assert out.read_bytes() == served.read_bytes()
    loaded = load_weights(out, "test")
    assert torch.equal(loaded["fc.weight"], state["fc.weight"])


def test_check_state_dict_accepts_a_resnet() -> None:
    check_state_dict(torchvision.models.resnet18(weights=None).state_dict(), "x")


def test_check_state_dict_names_a_few_keys_and_counts_the_rest() -> None:
    # tests/test_bad_inputs.py runs the weights stage on each kind of mismatch; this is the count.
    with pytest.raises(StageError) as err:
        check_state_dict({"fc.weight": torch.zeros(2, 2), "x": torch.zeros(1)}, "w.pth")
    assert str(err.value) == (
        "w.pth: the file is not ImageNet ResNet-18 weights: 101 keys missing (conv1.weight, bn1.weight, bn1.bias, "
        "and 98 more), 1 misshapen (fc.weight: expected 1000x512, got 2x2), 1 unexpected (x); "
        "check weights.url in params.yaml")


def test_the_expected_shapes_are_resnet18s() -> None:
    # Written out in hotdog.model.weights so that the weights stage needs no torchvision; the
    # order counts too, as the messages name the first missing keys.
    state = torchvision.models.resnet18(weights=None).state_dict()
    assert list(resnet18_shapes().items()) == [(k, tuple(v.shape)) for k, v in state.items()]


# --- declared sizes -------------------------------------------------------------------


@pytest.mark.parametrize("make", [make_zip, make_tar], ids=["zip", "tgz"])
def test_an_archive_over_the_limit_is_refused_before_writing(tmp_path: Path, make) -> None:
    archive = make(tmp_path / "hotdog.archive", GOOD)
    images = tmp_path / "data" / "hotdog"
    limit = sum(len(v) for v in GOOD.values()) - 1
    with pytest.raises(StageError, match=f"unpack to 24 B, more than the {limit} B that runtime.max_unpacked_gib"):
        extract(archive, images, limit)
    assert not images.parent.exists()
    extract(archive, images, limit + 1)  # exactly the limit is fine
    assert files_under(images) == sorted(GOOD)


def test_only_the_members_extracted_count_toward_the_limit(tmp_path: Path) -> None:
    archive = tmp_path / "hotdog.zip"
    write_zip_declaring(archive, {**GOOD, "extras/huge.bin": b"x"}, {"extras/huge.bin": 1 << 50})
    extract(archive, tmp_path / "images", LIMIT)  # extras/ is dropped, so its claim does not matter
    assert files_under(tmp_path / "images") == sorted(GOOD)
