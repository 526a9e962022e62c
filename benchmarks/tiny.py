"""The tiny offline project the benchmarks run on: a copy of a checkout as a clone has it, its
params.yaml shrunk as tests/conftest.py's pipeline_run shrinks it, and the tests' synthetic
hotdog.zip and stand-in weights from local paths, committed in a fresh git repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

# 32 px, 1 epoch, CPU, fp32, as the tests' pipeline_run; the data and weights keys are added
# once the synthetic files exist.
TINY = {"train.epochs": 1, "train.batch_size": 8, "train.image_size": 32, "train.device": "cpu",
        "train.precision": "fp32", "runtime.num_workers": 1, "manifest.max_reject_fraction": 0.2}
# Stage commands say `python -m stages.<name>`: this interpreter's bin goes first on PATH; and
# a machine without a git identity can still commit.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
       "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}


def git(cwd: Path, *args: str) -> str:
    """A git command's output; it must succeed."""
    return subprocess.run(["git", *args], cwd=cwd, env=ENV, capture_output=True, text=True, check=True).stdout


def copy_tree(source: Path, dest: Path) -> None:
    """source's files as a clone has them, plus its new files git does not ignore, so that
    uncommitted work is measured too."""
    for rel in git(source, "ls-files", "--cached", "--others", "--exclude-standard").splitlines():
        if (source / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest / rel)


def write_params(project: Path, overrides: dict) -> None:
    """The project's params.yaml with dotted keys set, its comments kept."""
    yaml = YAML()
    params = yaml.load(project / "params.yaml")
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value
    yaml.dump(params, project / "params.yaml")


def synthetic_inputs(source: Path, dest: Path) -> dict:
    """The tests' synthetic hotdog.zip and stand-in weights under dest; the params naming them."""
    sys.path.insert(0, str(source / "tests"))  # tests/ is no package; its helpers make the data
    from synthetic import dataset_files, write_weights, write_zip

    sha1 = write_zip(dest / "hotdog.zip", dataset_files({"train": 8, "test": 6}, corrupt=1))
    sha256 = write_weights(dest / "resnet18-stand-in.pth")
    return {"data.url": str(dest / "hotdog.zip"), "data.sha1": sha1,
            "weights.url": str(dest / "resnet18-stand-in.pth"), "weights.sha256": sha256[:8]}


def tiny_project(source: Path, dest: Path, overrides: dict) -> Path:
    """dest: source's files, params.yaml shrunk by TINY and `overrides`, committed."""
    copy_tree(source, dest)
    write_params(dest, {**TINY, **overrides})
    git(dest, "init", "-q")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "tiny project")
    return dest
