"""Your own images, through the real `dvc repro`: a 3-class set with train/ and val/, and a
10-class set of class folders alone that the pipeline splits, each with a LICENSE.txt the
download stage leaves out and a third of its photos a folder deeper in their class folder
(cat/2019/…), as photos kept by date are. Each ends with per-class
metrics by name, an N x N confusion, a report with its figures and `hotdog predict` by name."""

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import ENV, copy_project, dvc_repro, sh, started, write_params
from limits import E2E
from synthetic import class_files, write_weights, write_zip

from hotdog.core.names import RUNS, STAGES

pytestmark = pytest.mark.timeout(E2E)  # whole pipeline runs

SETS = {
    # name: (classes, images per class: a dict for train/ and test/, an int for folders alone)
    # train/ and val/, as Ultralytics keeps a classification set: val/ is the test split.
    "pets-3-split": (("cat", "dog", "fox"), {"train": 8, "val": 4}),
    "signs-10-folders": (tuple(str(i) for i in range(10)), 16),
}


def deeper_by_thirds(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same photos, every third one in a 2019/ folder inside its class folder."""
    return {(f"{name.rsplit('/', 1)[0]}/2019/{name.rsplit('/', 1)[1]}" if i % 3 == 0 else name): data
            for i, (name, data) in enumerate(sorted(files.items()))}


@pytest.mark.parametrize("name", SETS)
def test_a_set_of_n_classes_runs_end_to_end_by_name(tmp_path, name):
    classes, per_class = SETS[name]
    files = tmp_path / "files"
    # A licence beside the class folders, as TensorFlow's flower_photos has: left out, and said so.
    photos = deeper_by_thirds(class_files(classes, per_class, top=name))
    sha1 = write_zip(files / f"{name}.zip", {**photos, f"{name}/LICENSE.txt": b"CC-BY"})
    sha256 = write_weights(files / "weights.pth")
    project = copy_project(tmp_path / "project")
    write_params(project / "params.yaml", {
        "data.url": str(files / f"{name}.zip"), "data.sha1": sha1, "data.test_fraction": 0.3,
        "weights.url": str(files / "weights.pth"), "weights.sha256": sha256[:8], "train.batch_size": 16})
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "project")

    output = dvc_repro(project)
    assert started(output) == list(STAGES)
    assert f"left out 1 file(s) not named as images (1 .txt; e.g. {name}/LICENSE.txt)" in output
    assert ("val/ is the test split" in output) == isinstance(per_class, dict)

    manifest = json.loads((project / "metrics/manifest.json").read_text())
    assert manifest["classes"] == list(classes)
    assert manifest["layout"] == ("split" if isinstance(per_class, dict) else "folders")
    for split in ("train", "test"):
        assert set(manifest[split]["per_class"]) == set(classes) and all(manifest[split]["per_class"].values())
    # Every photo is in the manifest, those a folder deeper under their own class.
    rows = [row for split in ("train", "test") for row in pq.read_table(project / f"data/manifest/{split}.parquet",
                                                                        columns=["path", "class_name"]).to_pylist()]
    assert len(rows) == len(photos)
    deeper = [row for row in rows if "/2019/" in row["path"]]
    assert len(deeper) == sum("/2019/" in name for name in photos)
    assert all(row["path"].split("/")[-3] == row["class_name"] for row in deeper)  # …/<class>/2019/<photo>
    evaluation = json.loads((project / "metrics/evaluate.json").read_text())
    n = len(classes)
    for run in RUNS:
        metrics = evaluation[run]
        assert metrics["classes"] == list(classes) and set(metrics["per_class"]) == set(classes)
        assert {a: set(row) for a, row in metrics["confusion"].items()} == {c: set(classes) for c in classes}
        assert sum(sum(row.values()) for row in metrics["confusion"].values()) == metrics["images"]
        assert 0 <= metrics["ece"] <= 1 and metrics["roc_auc"] is not None
        assert ("top5_accuracy" in metrics) == (n > 5)
        assert metrics["majority_accuracy"] == pytest.approx(
            max(manifest["test"]["per_class"].values()) / manifest["test"]["images"])

    report = (project / "reports/report.md").read_text()
    assert all(c in report for c in classes) and "(d2l)" not in report
    figures = {p.name for p in (project / "reports/figures").glob("*.png")}
    assert {"samples.png", "confusion.png", "recall.png", "reliability.png", "misclassified_finetune.png",
            "misclassified_scratch.png"} <= figures
    assert all(f"(figures/{name})" in report for name in figures)

    photo = next((project / "data/hotdog").rglob("*.png"))
    answer = subprocess.run([sys.executable, "-m", "hotdog.cli", "predict", str(photo), "--model", "finetune",
                             "--json", "--top-k", "3"], cwd=project, env=ENV, capture_output=True, text=True)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    line = json.loads(answer.stdout.splitlines()[0])
    assert line["class"] in classes and set(line["probabilities"]) == set(classes)
    assert [t["class"] for t in line["top_k"]][0] == line["class"] and len(line["top_k"]) == 3
