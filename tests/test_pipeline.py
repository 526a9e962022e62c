"""The real `dvc repro` of the whole pipeline on a synthetic hotdog.zip and stand-in weights
(conftest's pipeline_run, which the tests that start from a finished run share; the flow
run of tests/test_flow.py fetches the same files over HTTP from 127.0.0.1)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import copy_run, dvc_repro, dvc_status, sh, started, write_params
from limits import E2E
from PIL import Image
from ruamel.yaml import YAML

from hotdog.core.names import CLASSES, STAGES

pytestmark = pytest.mark.timeout(E2E)  # whole pipeline runs, through dvc or Prefect


def test_dvc_repro_end_to_end(pipeline_run, tmp_path):
    assert started(pipeline_run.output) == list(STAGES)
    project = copy_run(pipeline_run, tmp_path / "project")  # committed after that first run
    check_outputs(project)

    lock = (project / "dvc.lock").read_bytes()
    second = dvc_repro(project)
    assert started(second) == ["source"], second  # DVC runs it every time; nothing after it
    assert (project / "dvc.lock").read_bytes() == lock and stale(project) == {}

    # A runtime knob changes no result, so nothing is stale; a comment in the training
    # loop makes both training stages stale, and evaluate only through their outputs.
    write_params(project / "params.yaml", {**pipeline_run.overrides, "runtime.num_workers": 2})
    assert stale(project) == {}
    loop = project / "hotdog/training/train.py"
    original = loop.read_text()
    loop.write_text(original + "# a comment\n")
    assert set(stale(project)) == {"finetune", "scratch"}
    loop.write_text(original)
    write_params(project / "params.yaml", pipeline_run.overrides)
    assert sh(project, "git", "status", "--porcelain") == ""  # as the first run's commit has it

    write_params(project / "params.yaml", {**pipeline_run.overrides, "scratch.lr": 0.05})
    before = recorded(project)
    third = dvc_repro(project)
    assert started(third) == ["source", "scratch", "evaluate", "export", "report"]
    after = recorded(project)
    assert [name for name in after if after[name] != before[name]] == ["scratch", "evaluate", "export", "report"]
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

    # Both commits' figures and confusion matrices, side by side: DVC reads the older ones
    # from its cache (the report's PNGs) and from git (the confusion CSVs).
    diff = json.loads(sh(project, "dvc", "plots", "diff", "HEAD~1", "HEAD", "--json"))["data"]
    for name in ("confusion.png", "recall.png", "reliability.png", "samples.png", "misclassified_scratch.png"):
        images = diff[f"reports/figures/{name}"]
        assert {rev for image in images for rev in image["revisions"]} == {"HEAD~1", "HEAD"}, images
    confusion = next(v for k, v in diff.items() if k.startswith("confusion"))
    rows = [row for plot in confusion for row in plot["content"]["data"]["values"]]
    assert {row["rev"] for row in rows} == {"HEAD~1", "HEAD"} and {row["actual"] for row in rows} == set(CLASSES)
    out = project / "plots-diff"
    sh(project, "dvc", "plots", "diff", "HEAD~1", "HEAD", "-o", str(out))
    page = (out / "index.html").read_text()
    assert page.count("confusion.png") >= 2 and "HEAD~1" in page

    # The outputs are links into DVC's cache (.dvc/config's cache.type), read-only: those of
    # the first run, and what re-ran here (copy_run copied the first run's files). No stage
    # and no DVC command above wrote into one in place: every cached file still hashes to its
    # name. (Root may write to a read-only file, so the mode alone proves nothing here.)
    for path in (pipeline_run.project / "data/decoded/train.arrow", pipeline_run.project / "models/finetune.pt",
                 next((pipeline_run.project / "data/hotdog/train/hotdog").iterdir()), project / "models/scratch.pt"):
        assert path.stat().st_nlink == 2 and not path.stat().st_mode & 0o222, path
    assert check_cache_intact(project) >= 20


def check_cache_intact(project: Path) -> int:
    """That each file in DVC's cache hashes to its name (md5, DVC 3's layout: files/md5/ab/cdef…,
    a directory's listing ending in .dir); how many there are."""
    objects = [p for p in (project / ".dvc/cache/files/md5").rglob("*") if p.is_file()]
    for path in objects:
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        assert digest == path.parent.name + path.name.removesuffix(".dir"), f"{path} was changed in place"
    return len(objects)


def stale(project: Path) -> dict:
    """What `dvc status --json` says is out of date, by stage: {} when nothing is."""
    return dvc_status(project)


def recorded(project: Path) -> dict:
    """Each stage's entry in dvc.lock: what DVC recorded when it last ran it."""
    return YAML(typ="safe").load((project / "dvc.lock").read_text())["stages"]


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
        assert checkpoint["classes"] == ["hotdog", "not-hotdog"]
        assert checkpoint["params"]["train"]["image_size"] == 32
        summary = json.loads((project / f"metrics/{run}.json").read_text())
        assert summary["epochs"] == 1 and summary["device"] == "cpu"
    evaluation = json.loads((project / "metrics/evaluate.json").read_text())
    for run in ("finetune", "scratch"):
        m = evaluation[run]
        assert m["images"] == 12 and 0 <= m["accuracy"] <= 1
        assert sum(sum(row.values()) for row in m["confusion"].values()) == 12
    assert pq.read_table(project / "metrics/predictions.parquet").num_rows == 24
    for run in ("finetune", "scratch"):
        assert (project / f"models/{run}.onnx").stat().st_size > 1_000_000
        assert (project / f"models/{run}.torchscript.pt").stat().st_size > 1_000_000
        confusion = (project / f"metrics/confusion_{run}.csv").read_text().splitlines()
        assert confusion[0] == "actual,predicted" and len(confusion) == 13
    export = json.loads((project / "metrics/export.json").read_text())
    assert all(export[run][fmt]["max_abs_diff"] <= 1e-4 for run in ("finetune", "scratch")
               for fmt in ("onnx", "torchscript"))
    report = (project / "reports/report.md").read_text()
    figures = re.findall(r"\(figures/([\w.-]+\.png)\)", report)
    # d2l's figures belong beside a run on d2l's own hotdog.zip only; this is a synthetic set.
    assert len(figures) >= 3 and "0.939" not in report and "(d2l)" not in report
    url = YAML(typ="safe").load((project / "params.yaml").read_text())["data"]["url"]
    assert f"| data.url | {url} |" in report  # which photos, first of all
    for name in figures:
        with Image.open(project / "reports/figures" / name) as img:
            img.verify()
