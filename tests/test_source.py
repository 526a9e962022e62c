"""data.url names a zip or a local folder: the source stage's record, the folder packed into a
zip whose bytes depend on the images alone, and DVC re-running the pipeline exactly when a
photo is added, removed or changed."""

import json
import os
import zipfile

import pytest
from conftest import copy_project, dvc_repro, dvc_status, sh, started, write_params
from limits import E2E
from synthetic import class_files, write_tree

from hotdog.core.errors import StageError
from hotdog.data.source import describe, folder_files, folder_of, pack, recorded_folder

CLASSES = ("ant", "bee", "cat")
LIMIT = 1 << 30


def photos(tmp_path, per_class=6):
    """A folder of class folders inside one top folder, as a user keeps photos: its path."""
    write_tree(tmp_path, class_files(CLASSES, per_class, top="photos"))
    (tmp_path / "photos" / "ant" / ".DS_Store").write_bytes(b"junk")
    return tmp_path / "photos"


def test_a_zip_is_recorded_by_url_and_digest_and_needs_one(tmp_path):
    assert folder_of("https://example.com/x.zip") is None and folder_of(str(tmp_path / "no.zip")) is None
    assert describe("https://example.com/x.zip", "a" * 40) == {"kind": "zip", "url": "https://example.com/x.zip",
                                                                 "sha1": "a" * 40}
    with pytest.raises(StageError, match=r"^data.sha1 is null, but data.url names an archive, not a folder "
                                         r"\(https://example.com/x.zip\)"):
        describe("https://example.com/x.zip", None)
    with pytest.raises(StageError, match=r"^data.sha1 is set, but data.url names a folder .*set data.sha1: null"):
        describe(str(tmp_path), "a" * 40)


def test_a_path_that_does_not_exist_is_named_as_such(tmp_path, monkeypatch):
    # Not "an archive that needs its SHA-1": nothing is there at all.
    with pytest.raises(StageError, match=rf"^data.url names {tmp_path}/photos, which does not exist \(relative paths "
                                         rf"start at {os.getcwd()}\); point it at your folder of photos, or at an "
                                         r"archive, in params.yaml$"):
        describe(str(tmp_path / "photos"), None)
    with pytest.raises(StageError, match=r"^data.url names file:///nowhere/photos.zip, which does not exist"):
        describe("file:///nowhere/photos.zip", None)
    # With its SHA-1, an archive's record needs no file: a clone that pulled the outputs has none.
    assert describe("file:///nowhere/photos.zip", "a" * 40) == {"kind": "zip", "url": "file:///nowhere/photos.zip",
                                                               "sha1": "a" * 40}
    folder = photos(tmp_path / "here")
    with pytest.raises(StageError, match=rf"^data.url names one image \({folder}/ant/0.png\); point it at the folder "
                                         r"that holds your class folders, or at an archive of them, in params.yaml$"):
        describe(str(folder / "ant/0.png"), None)
    # ~ is the home folder, for a folder as for an archive.
    monkeypatch.setenv("HOME", str(tmp_path))
    photos(tmp_path)
    assert describe("~/photos", None)["path"] == str(tmp_path / "photos")


def test_a_folders_record_is_kept_only_where_the_folder_is_not(tmp_path):
    folder = photos(tmp_path)
    record = tmp_path / "source.json"
    record.write_text(json.dumps(describe(str(folder), None)))
    assert recorded_folder(str(folder), None, record) is None  # here: described afresh
    folder.rename(tmp_path / "moved")
    assert recorded_folder(str(folder), None, record) == json.loads(record.read_text())
    assert recorded_folder(str(tmp_path / "other"), None, record) is None  # another folder's record
    assert recorded_folder(str(folder), "a" * 40, record) is None  # an archive: the download stage says
    assert recorded_folder(str(folder), None, tmp_path / "none.json") is None
    record.write_text("{")
    assert recorded_folder(str(folder), None, record) is None


def test_a_folders_record_follows_what_it_holds(tmp_path):
    folder = photos(tmp_path)
    assert folder_of(str(folder)) == folder and folder_of(folder.as_uri()) == folder
    first = describe(str(folder), None)
    assert first["kind"] == "folder" and first["files"] == 18  # .DS_Store is no photo
    assert describe(str(folder), None) == first
    (folder / "bee" / "new.png").write_bytes((folder / "bee" / "0.png").read_bytes())
    added = describe(str(folder), None)
    assert added["listing"] != first["listing"] and added["files"] == 19
    os.utime(folder / "bee" / "0.png", ns=(1, 1))  # a photo edited in place
    assert describe(str(folder), None)["listing"] != added["listing"]
    (folder / "bee" / "new.png").unlink()
    assert describe(str(folder), None)["files"] == 18


def test_a_packed_folder_depends_on_its_images_alone(tmp_path):
    folder = photos(tmp_path)
    assert pack(folder, tmp_path / "a.zip", LIMIT, None) == 18
    for path in folder.rglob("*.png"):
        os.utime(path, ns=(10**18, 10**18))  # touched, not changed
    pack(folder, tmp_path / "b.zip", LIMIT, None)
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert sorted(archive.namelist()) == [f for f in folder_files(folder) if f.endswith(".png")]
    pack(folder, tmp_path / "c.zip", LIMIT, ["cat", "ant"])
    with zipfile.ZipFile(tmp_path / "c.zip") as archive:
        assert {name.split("/")[0] for name in archive.namelist()} == {"ant", "cat"}
    (folder / "loose.png").write_bytes(b"x")
    with pytest.raises(StageError, match=r"loose.png is at the wrong depth"):
        pack(folder, tmp_path / "d.zip", LIMIT, None)
    assert not (tmp_path / "d.zip").exists()


def test_files_beside_the_photos_are_left_out_and_change_nothing(tmp_path, capsys):
    folder = photos(tmp_path)
    (folder / "README.md").write_text("my photos")
    (folder / "bee" / "labels.csv").write_text("0.png,bee")
    first = describe(str(folder), None)
    assert first["files"] == 18
    assert pack(folder, tmp_path / "a.zip", LIMIT, None) == 18
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        f"{folder}: left out 2 file(s) not named as images (1 .csv, 1 .md; e.g. README.md); the images taken end in")
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        assert all(name.endswith(".png") for name in archive.namelist())
    (folder / "README.md").write_text("my photos, described at length")  # no photo changed: nothing to re-run
    assert describe(str(folder), None) == first
    (folder / "cat" / "0.PNG").write_bytes((folder / "cat" / "1.png").read_bytes())  # one named in upper case
    assert describe(str(folder), None)["files"] == 19


@pytest.mark.timeout(E2E)
def test_dvc_notices_a_photo_added_changed_or_removed(tmp_path):
    folder = photos(tmp_path / "mine", per_class=8)
    (folder / "ant" / ".DS_Store").unlink()
    project = copy_project(tmp_path / "project")
    write_params(project / "params.yaml", {"data.url": str(folder), "data.sha1": None, "data.test_fraction": 0.3})
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "my photos")
    # Up to the manifest: what a folder's record touches. The stages after it read only its
    # outputs, as they do for a zip (tests/test_pipeline.py runs those).
    assert started(dvc_repro(project, "manifest")) == ["source", "download", "manifest"]
    assert json.loads((project / "metrics/manifest.json").read_text())["classes"] == list(CLASSES)
    assert started(dvc_repro(project, "manifest")) == ["source"]
    assert not {"download", "manifest"} & set(dvc_status(project))

    # Each change makes the source stage's record, and so download, stale: DVC notices it
    # (`dvc status` after the source stage, which `dvc repro` runs first, every time).
    extra = class_files(CLASSES, 9, top="photos", seed=5)
    for change in ("added", "changed", "removed"):
        if change == "added":
            (folder / "cat" / "8.png").write_bytes(extra["photos/cat/8.png"])
        elif change == "changed":
            (folder / "bee" / "3.png").write_bytes(extra["photos/bee/3.png"])
        else:
            (folder / "ant" / "2.png").unlink()
        assert started(dvc_repro(project, "source")) == ["source"]
        assert dvc_status(project)["download"] == [{"changed deps": {"data/raw/source.json": "modified"}}], change
        assert started(dvc_repro(project, "download")) == ["source", "download"]
        assert "download" not in dvc_status(project) and "manifest" in dvc_status(project), change
    # The changes reach the manifest (the stages after it follow from their inputs, as always).
    assert started(dvc_repro(project, "manifest")) == ["source", "manifest"]
    rows = sum(json.loads((project / "metrics/manifest.json").read_text())[s]["images"] for s in ("train", "test"))
    assert rows == 3 * 8
    os.utime(folder / "ant" / "0.png", ns=(10**18, 10**18))  # touched only: the packed zip is the same
    assert started(dvc_repro(project, "download")) == ["source", "download"]
    assert "manifest" not in dvc_status(project)

    # A clone that pulled the outputs from a remote has no photos: the record is kept, and
    # nothing after the source stage runs (the download stage alone would need them).
    folder.rename(tmp_path / "elsewhere")
    output = dvc_repro(project, "manifest")
    assert started(output) == ["source"] and f"source: {folder} is not on this machine; kept the record of its" in output
    assert not {"download", "manifest"} & set(dvc_status(project))
