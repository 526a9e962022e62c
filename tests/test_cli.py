"""The `hotdog` command installed by pyproject.toml."""

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from hotdog.cli import main
from hotdog.core.errors import StageError
from hotdog.core.names import CLASSES, SPLITS
from hotdog.data import synthetic as make_data


def test_make_data_writes_a_photo_sized_stand_in(tmp_path, capsys):
    # make_data's own main, as `hotdog make-data` calls it: the command is looked up by name at
    # run time, which tests/lanes.py cannot read through, and this one starts processes.
    make_data.main([str(tmp_path / "fake"), "--train", "2", "--test", "1"])
    for split, n in zip(SPLITS, (2, 1)):
        for name in CLASSES:
            assert sorted(p.name for p in (tmp_path / "fake" / split / name).iterdir()) == [f"{i}.png" for i in range(n)]
    assert "wrote 6 images" in capsys.readouterr().out
    # Again into the same folder: refused, not merged, and nothing is written.
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit, match=r"^error: make-data: .*/fake already holds files; pick a new or empty "
                                         r"folder, or remove it first$"):
        make_data.main([str(tmp_path / "fake"), "--train", "1", "--test", "1"])
    assert sorted(tmp_path.rglob("*")) == before
    # --test 0: a folder of photos (benchmarks/predict.py), with no empty test/ folders.
    make_data.main([str(tmp_path / "photos"), "--train", "2", "--test", "0"])
    assert sorted(p.relative_to(tmp_path / "photos").as_posix() for p in (tmp_path / "photos").rglob("*.png")) == [
        f"train/{name}/{i}.png" for name in CLASSES for i in range(2)]
    assert not (tmp_path / "photos/test").exists() and "wrote 4 images" in capsys.readouterr().out


def test_make_data_names_a_path_it_cannot_write_in_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    with pytest.raises(SystemExit) as done:
        make_data.main([str(tmp_path / "notes.txt/out"), "--train", "1", "--test", "1"])
    assert done.value.code == (f"error: make-data: cannot write {tmp_path / 'notes.txt/out/train/hotdog'} (Not a "
                               "directory); pick a folder you can write to, with room for the images")


@pytest.mark.parametrize("option,value,said", [("--train", "0", "must be at least 1, not 0"),
                                               ("--train", "-3", "must be at least 1, not -3"),
                                               ("--test", "-1", "must be at least 0, not -1"),
                                               ("--test", "two", "'two' is not a whole number")])
def test_make_data_refuses_a_count_it_cannot_write(option, value, said, capsys):
    with pytest.raises(SystemExit) as done:
        make_data.parse_args(["out", option, value])
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"hotdog make-data: error: argument {option}: {said}"


def test_make_data_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        make_data.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "training images per class (default: 500)" in text and "(default: 200)" in text
    assert "the images' format (default: png)" in text


def test_make_data_takes_only_a_new_or_empty_folder(tmp_path):
    make_data.check_new(tmp_path / "new")
    make_data.check_new(tmp_path)  # empty
    (tmp_path / "train").mkdir()
    with pytest.raises(StageError, match=r"already holds files; pick a new or empty folder, or remove it first$"):
        make_data.check_new(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StageError, match=r"file is a file, not a folder; pick a new or empty folder$"):
        make_data.check_new(tmp_path / "file")


def test_an_unknown_command_is_one_error_with_the_usage(capsys):
    with pytest.raises(SystemExit) as done:
        main(["predcit"])
    assert done.value.code == 2  # as argparse's for a command line it cannot take
    err = capsys.readouterr().err
    assert err.startswith("error: hotdog: unknown command 'predcit'\nusage: hotdog {predict,demo,experiments")


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        main([])
    out, err = capsys.readouterr()
    assert done.value.code == 2 and out == ""
    assert err.startswith("error: hotdog: no command given; name one of these\nusage: hotdog {predict,")


def test_version_is_the_installed_packages(capsys):
    main(["--version"])
    assert capsys.readouterr().out == f"hotdog {version('hotdog')}\n"


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "hotdog"
    run = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "cuda-check" in run.stdout and "predict" in run.stdout
    bare = subprocess.run([script], capture_output=True, text=True)
    assert bare.returncode == 2 and bare.stdout == "" and "usage: hotdog {predict," in bare.stderr
