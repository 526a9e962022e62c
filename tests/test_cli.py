"""The `hotdog` command installed by pyproject.toml."""

import subprocess
import sys
from pathlib import Path

import pytest

from hotdog.cli import main
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


def test_an_unknown_command_is_one_error_with_the_usage():
    with pytest.raises(SystemExit, match=r"error: hotdog: unknown command 'predcit'\nusage: hotdog \{predict,demo,experiments"):
        main(["predcit"])


def test_the_console_script_is_installed():
    script = Path(sys.executable).parent / "hotdog"
    run = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "cuda-check" in run.stdout and "predict" in run.stdout
