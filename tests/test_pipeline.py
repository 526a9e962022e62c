"""The real `dvc repro` of the whole pipeline on a synthetic hotdog.zip served from 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import REPO, write_params
from servers import serve_directory
from synthetic import dataset_files, write_weights, write_zip

pytestmark = pytest.mark.slow
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}


def sh(cwd: Path, *args: str) -> str:
    """Run a command (no shell), fail the test with its output if it fails."""
    run = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


def ran(output: str) -> list[str]:
    """The stages a `dvc repro` output says it ran."""
    return re.findall(r"Running stage '([\w@-]+)'", output)


def copy_project(dest: Path) -> Path:
    """The repo's committed files in a fresh git repo, as a user's clone would have them."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    for rel in files.stdout.split():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    sh(dest, "git", "init", "-q")
    return dest


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """hotdog.zip and a stand-in weights file on a local HTTP server: (url, sha1, url, sha256)."""
    root = tmp_path_factory.mktemp("served")
    sha1 = write_zip(root / "hotdog.zip", dataset_files({"train": 8, "test": 6}, corrupt=1))
    sha256 = write_weights(root / "resnet18-stand-in.pth")
    with serve_directory(root) as base:
        yield f"{base}/hotdog.zip", sha1, f"{base}/resnet18-stand-in.pth", sha256


def test_dvc_repro_end_to_end(served, tmp_path):
    data_url, sha1, weights_url, sha256 = served
    project = copy_project(tmp_path / "project")
    overrides = {"data.url": data_url, "data.sha1": sha1,
                 "weights.url": weights_url, "weights.sha256": sha256[:8],
                 "train.batch_size": 8, "train.num_workers": 1}
    write_params(project / "params.yaml", overrides)

    first = sh(project, "dvc", "repro")
    assert ran(first) == ["download", "weights", "manifest", "finetune", "scratch", "evaluate", "report"]
    check_outputs(project)

    second = sh(project, "dvc", "repro")
    assert ran(second) == [], second
    assert "Data and pipelines are up to date" in sh(project, "dvc", "status")

    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "first run")
    write_params(project / "params.yaml", {**overrides, "scratch.lr": 0.05})
    third = sh(project, "dvc", "repro")
    assert ran(third) == ["scratch", "evaluate", "report"]
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "scratch lr 0.05")

    params = json.loads(sh(project, "dvc", "params", "diff", "HEAD~1", "--json"))
    assert list(params["params.yaml"]) == ["scratch.lr"]
    assert params["params.yaml"]["scratch.lr"]["old"] == 0.0005
    assert params["params.yaml"]["scratch.lr"]["new"] == 0.05
    metrics = json.loads(sh(project, "dvc", "metrics", "diff", "HEAD~1", "--json"))
    changed = {f"{file}:{key}" for file, keys in metrics.items() for key in keys}
    assert "metrics/scratch.json:loss" in changed
    assert "metrics/evaluate.json:scratch.loss" in changed
    assert not any("finetune" in key for key in changed), changed  # finetune did not re-run
    assert "Training loss" in sh(project, "dvc", "plots", "show", "--json")


def check_outputs(project: Path) -> None:
    """Every output exists and holds what its stage promises."""
    train = pq.read_table(project / "data/manifest/train.parquet")
    assert train.num_rows == 16 and set(train.column("class_name").to_pylist()) == {"hotdog", "not-hotdog"}
    rejects = (project / "data/manifest/rejects.csv").read_text().splitlines()
    assert len(rejects) == 3  # header + one truncated PNG per split
    assert json.loads((project / "metrics/manifest.json").read_text())["test"]["images"] == 12
    for run in ("finetune", "scratch"):
        checkpoint = torch.load(project / f"models/{run}.pt", weights_only=True)
        assert checkpoint["run"] == run and checkpoint["state_dict"]["fc.weight"].shape == (2, 512)
        assert checkpoint["params"]["train"]["image_size"] == 32
        summary = json.loads((project / f"metrics/{run}.json").read_text())
        assert summary["epochs"] == 1 and summary["device"] == "cpu"
    evaluation = json.loads((project / "metrics/evaluate.json").read_text())
    for run in ("finetune", "scratch"):
        m = evaluation[run]
        assert m["images"] == 12 and 0 <= m["accuracy"] <= 1
        assert sum(sum(row.values()) for row in m["confusion"].values()) == 12
    assert pq.read_table(project / "metrics/predictions.parquet").num_rows == 24
    report = (project / "reports/report.md").read_text()
    figures = re.findall(r"\(figures/([\w.-]+\.png)\)", report)
    assert len(figures) >= 3 and "0.939" in report
    for name in figures:
        with Image.open(project / "reports/figures" / name) as img:
            img.verify()
