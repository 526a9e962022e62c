"""A stage that DVC starts with a `python` lacking the project's packages: re-run with the
project's Python (the one running dvc), or one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ENV, copy_project, write_params
from synthetic import dataset_files, write_tree

from hotdog.runner.interpreter import dvc_python

DVC = str(Path(sys.executable).parent / "dvc")


def bare_python(folder: Path) -> Path:
    """A `python` on PATH that sees none of the project's packages (no site-packages), as a
    system python without the venv does."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "python"
    shim.write_text(f'#!/bin/sh\nexec {os.path.realpath(sys.executable)} -S "$@"\n')
    shim.chmod(0o755)
    return folder


def bare_env(shims: Path) -> dict[str, str]:
    env = {k: v for k, v in ENV.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": f"{shims}{os.pathsep}/usr/bin{os.pathsep}/bin"}


def test_dvc_python_is_found_in_its_command_line():
    assert dvc_python([["sh", "-c", "x"], ["/p/.venv/bin/python", "/p/.venv/bin/dvc", "repro"]]) == "/p/.venv/bin/python"
    assert dvc_python([["/usr/bin/python3.11", "-m", "dvc", "exp", "run"]]) == "/usr/bin/python3.11"
    assert dvc_python([["/usr/bin/python3", "-m", "pytest"], ["bash"]]) is None


def test_a_stage_that_dvc_starts_with_a_bare_python_runs_in_dvcs(tmp_path):
    project = copy_project(tmp_path / "project")
    write_params(project / "params.yaml")
    write_tree(project / "data", dataset_files({"train": 3, "test": 2}))
    env = bare_env(bare_python(tmp_path / "shims"))
    assert subprocess.run(["python", "-c", "import torch"], env=env, capture_output=True).returncode != 0
    run = subprocess.run([DVC, "repro", "--single-item", "manifest"], cwd=project, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    note = [line for line in run.stderr.splitlines() if line.startswith("note: manifest:")]
    assert len(note) == 1 and "cannot import torch" in note[0]
    assert f"running the stage with {Path(sys.executable).parent}/python" in note[0]
    assert (project / "data/manifest/train.parquet").is_file()


def test_a_bare_python_without_a_project_python_to_use_is_one_line(tmp_path):
    project = copy_project(tmp_path / "project")  # no .venv in it, and no dvc above
    write_params(project / "params.yaml")
    run = subprocess.run(["python", "-m", "stages.download"], cwd=project,
                         env=bare_env(bare_python(tmp_path / "shims")), capture_output=True, text=True)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith("error: download: ") and "cannot import torch" in run.stderr
    assert "activate it (. .venv/bin/activate) or run `make run`" in run.stderr
    assert not (project / "data/raw").exists()
