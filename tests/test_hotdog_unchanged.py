"""Classes became data (issue #20), and the hotdog run did not change: with params.yaml as it
is, the synthetic hotdog run's checkpoints and metrics equal those of the code before that
change, run here on the same data, on the same machine (results differ by CPU ISA, so no
figure recorded elsewhere could be compared)."""

import io
import json
import subprocess
import tarfile

import pyarrow.parquet as pq
import pytest
import torch
from conftest import ENV, REPO, TINY, sh, with_overrides
from limits import E2E
from ruamel.yaml import YAML

from hotdog.core.names import RUNS

pytestmark = pytest.mark.timeout(E2E)  # a whole pipeline run of the old code

# main just before classes became data; the code this test runs as "before".
BEFORE = "33890485d8adfd787f08ed0bb1fb2eb60ceb4e3c"
# What a run records about itself and not about its result: times, rates and the like.
UNTIMED = ("seconds", "per_sec", "wall", "time", "peak", "memory", "rss", "device_name", "processes")


def untimed(tree):
    """A metrics tree without what depends on the machine's speed."""
    if isinstance(tree, dict):
        return {k: untimed(v) for k, v in tree.items() if not any(word in k for word in UNTIMED)}
    if isinstance(tree, list):
        return [untimed(v) for v in tree]
    return tree


def old_project(dest, overrides: dict):
    """The code at BEFORE, with its own params.yaml shrunk as the shared run's is."""
    archive = subprocess.run(["git", "archive", "--format=tar", BEFORE], cwd=REPO, capture_output=True)
    assert archive.returncode == 0, (f"commit {BEFORE} is not in this clone's history "
                                     f"({archive.stderr.decode().strip()}); clone without --depth")
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    yaml = YAML()
    params = with_overrides(yaml.load((dest / "params.yaml").read_text()), {**TINY, **overrides})
    yaml.dump(params, dest / "params.yaml")
    sh(dest, "git", "init", "-q")
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before")
    return dest


def test_the_hotdog_run_is_what_it_was_before_classes_became_data(pipeline_run, tmp_path):
    new = pipeline_run.project
    old = old_project(tmp_path / "before", pipeline_run.overrides)
    run = subprocess.run(["dvc", "repro"], cwd=old, env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr

    for name in RUNS:
        before = torch.load(old / f"models/{name}.pt", weights_only=True)
        after = torch.load(new / f"models/{name}.pt", weights_only=True)
        assert before["state_dict"].keys() == after["state_dict"].keys()
        assert all(torch.equal(before["state_dict"][k], after["state_dict"][k]) for k in before["state_dict"])
        assert after["params"] == {**before["params"]} and after["classes"] == ["hotdog", "not-hotdog"]
        for metrics in (f"{name}.json", f"{name}_epochs.json"):
            assert untimed(json.loads((new / "metrics" / metrics).read_text())) == \
                untimed(json.loads((old / "metrics" / metrics).read_text()))

    before, after = (json.loads((p / "metrics/evaluate.json").read_text()) for p in (old, new))
    for name in RUNS:
        # Every figure the old code reported is the same; the new ones (ece, classes) are extra.
        assert {k: after[name][k] for k in before[name]} == before[name]
    old_rows = pq.read_table(old / "metrics/predictions.parquet").to_pylist()
    new_rows = pq.read_table(new / "metrics/predictions.parquet").to_pylist()
    assert [(r["path"], r["model"], r["label"], r["predicted"], r["prob_hotdog"]) for r in old_rows] == \
        [(r["path"], r["model"], r["label"], r["predicted"], r["probabilities"][0]) for r in new_rows]
    manifest_before, manifest_after = (json.loads((p / "metrics/manifest.json").read_text()) for p in (old, new))
    for split in ("train", "test"):
        counts = {k: v for k, v in manifest_before[split].items() if k not in ("images", "rejected")}
        assert manifest_after[split] == {"images": manifest_before[split]["images"],
                                         "rejected": manifest_before[split]["rejected"], "per_class": counts}
