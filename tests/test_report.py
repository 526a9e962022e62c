"""The report stage on a tiny fake pipeline: a few images, manifests, metrics and predictions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from hotdog.core.errors import StageError
from hotdog.core.names import CLASSES, RUNS
from hotdog.core.params import load_params
from hotdog.core.schema import MANIFEST, PREDICTIONS
from hotdog.evaluation import report
from stages import report as report_stage

REPO = Path(__file__).resolve().parents[1]

# (file name, PIL mode, format) per class folder; grey, palette, RGBA and CMYK all occur upstream.
IMAGES = [("0.png", "RGB", "PNG"), ("1.png", "L", "PNG"), ("10.png", "P", "PNG"),
          ("2.jpg", "CMYK", "JPEG"), ("3.png", "RGBA", "PNG")]
# Test predictions per model: path -> (predicted, prob_hotdog).
PREDICTED = {
    "finetune": {"test/hotdog/1.png": (1, 0.20), "test/not-hotdog/0.png": (0, 0.70)},
    "scratch": {"test/hotdog/0.png": (1, 0.10), "test/hotdog/2.jpg": (1, 0.10),
                "test/not-hotdog/3.png": (0, 0.95)},
}
ACCURACY = {"finetune": 0.8125, "scratch": 0.6875}


def _write_images(images: Path) -> list[dict]:
    rows = []
    for split in ("train", "test"):
        for label, cls in enumerate(CLASSES):
            for k, (name, mode, fmt) in enumerate(IMAGES):
                rel = f"{split}/{cls}/{name}"
                dest = images / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                colour = (40 * k, 200 * (1 - label), 200 * label)
                Image.new("RGB", (40 + 8 * k, 32), colour).convert(mode).save(dest, fmt)
                rows.append({"path": rel, "label": label, "class_name": cls, "split": split,
                             "size_bytes": dest.stat().st_size, "sha1": "0" * 40,
                             "width": 40 + 8 * k, "height": 32, "format": fmt, "mode": mode})
    return rows


def _evaluation_entry(run: str) -> dict:
    confusion = {"hotdog": {"hotdog": 4, "not-hotdog": 1}, "not-hotdog": {"hotdog": 1, "not-hotdog": 4}}
    per_class = {c: {"precision": 0.8, "recall": 0.8, "f1": 0.8, "support": 5} for c in CLASSES}
    return {"accuracy": ACCURACY[run], "balanced_accuracy": ACCURACY[run] - 0.0011, "majority_accuracy": 0.5,
            "loss": 0.4, "roc_auc": 0.9012 if run == "finetune" else 0.7034,
            "images": 10, "per_class": per_class, "confusion": confusion,
            "device": "cpu", "precision": "bf16"}


def _predictions(manifest: list[dict], predicted: dict) -> list[dict]:
    rows = []
    for run in RUNS:
        for r in (r for r in manifest if r["split"] == "test"):
            pred, p = predicted[run].get(r["path"], (r["label"], 0.9 if r["label"] == 0 else 0.1))
            rows.append({"path": r["path"], "label": r["label"], "model": run, "predicted": pred,
                         "prob_hotdog": p, "loss": 0.5})
    return rows


def make_pipeline(root: Path, predicted: dict = PREDICTED) -> Path:
    """Write params.yaml and every input the report reads under `root`; return root."""
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    paths = load_params(path=root / "params.yaml").paths
    manifest = _write_images(root / paths.images)
    (root / paths.manifest).mkdir(parents=True)
    for split in ("train", "test"):
        rows = [r for r in manifest if r["split"] == split]
        pq.write_table(pa.Table.from_pylist(rows, MANIFEST), root / paths.manifest_file(split))
    (root / paths.metrics).mkdir(parents=True)
    for run in RUNS:
        epochs = [{"epoch": e, "loss": 0.9 / e, "train_acc": 0.5 + 0.1 * e, "test_acc": 0.55 + 0.1 * e,
                   "examples_per_sec": 30.0, "examples_per_sec_wall": 25.0, "epoch_seconds": 9.0}
                  for e in (1, 2)]
        (root / paths.run_epochs(run)).write_text(json.dumps(epochs))
        summary = {"epochs": 2, "loss": 0.4321 if run == "finetune" else 0.6543, "train_acc": 0.7456,
                   "test_acc": ACCURACY[run], "examples_per_sec": 29.64, "examples_per_sec_wall": 24.5,
                   "train_seconds": 18.0, "device": "cpu", "precision": "bf16"}
        (root / paths.run_summary(run)).write_text(json.dumps(summary))
    (root / paths.evaluation).write_text(json.dumps({run: _evaluation_entry(run) for run in RUNS}))
    table = pa.Table.from_pylist(_predictions(manifest, predicted), PREDICTIONS)
    pq.write_table(table, root / paths.predictions)
    return root


def run_stage(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.report"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = make_pipeline(tmp_path_factory.mktemp("report"))
    return root, run_stage(root)


# ---------------------------------------------------------------- the stage end to end


def test_stage_writes_report_and_figures(built):
    root, proc = built
    assert proc.returncode == 0, proc.stderr
    text = (root / "reports/report.md").read_text()
    for number in ("0.939", "0.843", "0.812", "0.688", "0.901", "0.703", "999.1", "29.6"):
        assert number in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert set(links) == {report.FIG_SAMPLES, report.FIG_CURVES, report.FIG_CONFUSION,
                          report.fig_misclassified("finetune"), report.fig_misclassified("scratch")}
    for link in links:
        assert not Path(link).is_absolute()
        with Image.open(root / "reports" / link) as img:
            assert img.format == "PNG" and img.width >= 300 and img.height >= 150


def test_stage_leaves_no_temporary_files(built):
    root, _ = built
    # .hotdog/ is paths.state (the run lock), a working folder, not a temporary file.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".hotdog") == []
    assert sorted(p.name for p in (root / "reports").iterdir()) == ["figures", "report.md"]


def test_stage_reports_missing_evaluation(tmp_path):
    root = make_pipeline(tmp_path)
    (root / "metrics/evaluate.json").unlink()
    proc = run_stage(root)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: report: metrics/evaluate.json is missing")
    assert "dvc repro evaluate" in proc.stderr
    assert not (root / "reports/report.md").exists()


# ---------------------------------------------------------------- main() in-process


def test_main_without_mistakes_says_so(tmp_path, monkeypatch):
    root = make_pipeline(tmp_path, predicted={"finetune": PREDICTED["finetune"], "scratch": {}})
    monkeypatch.chdir(root)
    report_stage.main()
    text = (root / "reports/report.md").read_text()
    assert "scratch: no misclassified test images (of 10)." in text
    assert report.fig_misclassified("scratch") not in text
    assert not (root / "reports" / report.fig_misclassified("scratch")).exists()
    assert (root / "reports" / report.fig_misclassified("finetune")).exists()


@pytest.mark.parametrize("name, damage, message", [
    ("evaluation key", lambda r: _edit_json(r / "metrics/evaluate.json", lambda d: d["scratch"].pop("roc_auc")),
     r"metrics/evaluate.json is malformed \(scratch.roc_auc: expected a number.*dvc repro evaluate"),
    ("confusion cell", lambda r: _edit_json(r / "metrics/evaluate.json",
                                            lambda d: d["finetune"]["confusion"]["hotdog"].pop("hotdog")),
     r"finetune.confusion.hotdog.hotdog: expected a number"),
    ("epochs empty", lambda r: (r / "metrics/scratch_epochs.json").write_text("[]"),
     r"metrics/scratch_epochs.json is malformed \(expected a non-empty list.*dvc repro scratch"),
    ("summary json", lambda r: (r / "metrics/finetune.json").write_text("{"),
     r"metrics/finetune.json is malformed \(not valid JSON"),
    ("manifest gone", lambda r: (r / "data/manifest/test.parquet").unlink(),
     r"data/manifest/test.parquet is missing; run `dvc repro manifest`"),
    ("manifest column", lambda r: pq.write_table(
        pq.read_table(r / "data/manifest/train.parquet").drop(["sha1"]), r / "data/manifest/train.parquet"),
     r"train.parquet has columns .* run `dvc repro manifest`"),
    ("predictions column", lambda r: pq.write_table(
        pq.read_table(r / "metrics/predictions.parquet").drop(["prob_hotdog"]), r / "metrics/predictions.parquet"),
     r"predictions.parquet has columns .* run `dvc repro evaluate`"),
    ("predictions run", lambda r: pq.write_table(
        pq.read_table(r / "metrics/predictions.parquet").filter(pc.field("model") == "finetune"),
        r / "metrics/predictions.parquet"),
     r"predictions.parquet is malformed \(no rows for model 'scratch'\); re-run `dvc repro evaluate`"),
    ("predictions not parquet", lambda r: (r / "metrics/predictions.parquet").write_text("junk"),
     r"predictions.parquet is not a readable Parquet file"),
])
def test_main_names_bad_input(tmp_path, monkeypatch, name, damage, message):
    root = make_pipeline(tmp_path)
    damage(root)
    monkeypatch.chdir(root)
    with pytest.raises(StageError, match=message):
        report_stage.main()
    assert not (root / "reports").exists()


def test_failure_while_drawing_keeps_previous_report(tmp_path, monkeypatch):
    root = make_pipeline(tmp_path)
    (root / "reports").mkdir()
    (root / "reports/report.md").write_text("previous\n")
    (root / "data/hotdog/test/not-hotdog/3.png").unlink()  # one of scratch's mistakes
    monkeypatch.chdir(root)
    with pytest.raises(StageError, match=r"test/not-hotdog/3.png is missing; run `dvc repro download`"):
        report_stage.main()
    assert (root / "reports/report.md").read_text() == "previous\n"
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------- pure functions


def _manifest(n_hot: int, n_not: int) -> list[dict]:
    rows = [{"path": f"train/hotdog/{i}.png", "label": 0} for i in range(n_hot)]
    return rows + [{"path": f"train/not-hotdog/{i}.png", "label": 1} for i in range(n_not)]


def test_select_samples_follows_seed():
    hot, other = report.select_samples(_manifest(10, 12))
    assert [r["path"] for r in hot] == [f"train/hotdog/{i}.png" for i in range(8)]
    # The seed shows train_imgs[-i - 1]: the last row first.
    assert [r["path"] for r in other] == [f"train/not-hotdog/{i}.png" for i in range(11, 3, -1)]


def test_select_samples_with_few_images():
    hot, other = report.select_samples(_manifest(3, 1))
    assert len(hot) == 3 and [r["path"] for r in other] == ["train/not-hotdog/0.png"]


def test_select_misclassified_order_and_cap():
    rows = [
        {"path": "b", "label": 0, "model": "finetune", "predicted": 1, "prob_hotdog": 0.30},  # conf 0.70
        {"path": "a", "label": 1, "model": "finetune", "predicted": 0, "prob_hotdog": 0.70},  # conf 0.70
        {"path": "c", "label": 1, "model": "finetune", "predicted": 0, "prob_hotdog": 0.99},  # conf 0.99
        {"path": "d", "label": 0, "model": "finetune", "predicted": 0, "prob_hotdog": 0.99},  # right
        {"path": "e", "label": 0, "model": "scratch", "predicted": 1, "prob_hotdog": 0.01},  # other run
        {"path": "f", "label": 0, "model": "finetune", "predicted": 1, "prob_hotdog": 0.45},  # conf 0.55
    ]
    assert [r["path"] for r in report.select_misclassified(rows, "finetune")] == ["c", "a", "b", "f"]
    assert [r["path"] for r in report.select_misclassified(rows, "finetune", limit=2)] == ["c", "a"]
    assert report.select_misclassified(rows[3:4], "finetune") == []
    assert report.mistake_counts(rows, limit=2) == {
        "finetune": {"images": 5, "wrong": 4, "shown": 2},
        "scratch": {"images": 1, "wrong": 1, "shown": 1},
    }


def test_class_counts():
    counts = report.class_counts({"train": _manifest(3, 2), "test": _manifest(0, 1)})
    assert counts == {"train": {"hotdog": 3, "not-hotdog": 2}, "test": {"hotdog": 0, "not-hotdog": 1}}


def _render(mistakes=None) -> str:
    summaries = {run: {"loss": loss, "train_acc": acc, "examples_per_sec": 29.64,
                       "examples_per_sec_wall": 24.96, "device": "cuda", "precision": "bf16"}
                 for run, loss, acc in (("finetune", 0.2049, 0.9312), ("scratch", 0.3811, 0.8222))}
    evaluation = {run: _evaluation_entry(run) for run in RUNS}
    counts = {"train": {"hotdog": 1000, "not-hotdog": 1000}, "test": {"hotdog": 400, "not-hotdog": 400}}
    mistakes = mistakes or {run: {"images": 800, "wrong": 50, "shown": 32} for run in RUNS}
    return report.render_markdown(summaries, evaluation, counts, [("seed", "0"), ("finetune.lr", "5e-05")],
                                  mistakes)


def _row(text: str, first_cell: str) -> list[str]:
    line = next(l for l in text.splitlines() if l.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_render_markdown_comparison_table():
    text = _render()
    assert _row(text, "fine-tune (ours)") == ["fine-tune (ours)", "0.205", "0.931", "0.812", "0.811", "0.500",
                                              "0.901", "29.6", "25.0", "cuda", "bf16"]
    assert _row(text, "fine-tune (d2l)")[1:7] == ["0.220", "0.915", "0.939", "—", "0.500", "—"]
    assert _row(text, "scratch (ours)")[1:7] == ["0.381", "0.822", "0.688", "0.686", "0.500", "0.703"]
    assert _row(text, "scratch (d2l)")[1:4] == ["0.374", "0.839", "0.843"]
    assert _row(text, "finetune.lr") == ["finetune.lr", "5e-05"]
    assert _row(text, "train") == ["train", "1000", "1000", "2000"]
    assert _row(text, "test") == ["test", "400", "400", "800"]
    assert "| scratch | not-hotdog | 0.800 | 0.800 | 0.800 | 5 |" in text


def test_render_markdown_links_are_relative():
    text = _render()
    assert "](figures/misclassified_finetune.png)" in text
    assert "50 of 800 test images misclassified; the 32 most confident" in text
    assert "](/" not in text and "](reports/" not in text


def test_render_markdown_without_mistakes():
    none = {run: {"images": 800, "wrong": 0, "shown": 0} for run in RUNS}
    text = _render(none)
    assert "misclassified_" not in text
    assert "fine-tune: no misclassified test images (of 800)." in text


def test_param_rows_cover_declared_sections(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    p = load_params(*report_stage.PARAMS, path=tmp_path / "params.yaml")
    rows = report.param_rows(p.seed, {section: getattr(p, section) for section in report_stage.PARAMS[1:]})
    keys = [k for k, _ in rows]
    assert keys[0] == "seed" and "train.epochs" in keys and "scratch.head_init" in keys
    assert dict(rows)["finetune.pretrained"] == "true"
    assert not any(k.startswith(("data.", "weights.", "paths.", "runtime.")) for k in keys)


def test_plots_work_with_one_epoch_and_zero_counts():
    epochs = {run: [{"epoch": 1, "loss": 0.5, "train_acc": 0.7, "test_acc": 0.8}] for run in RUNS}
    assert len(report.plot_curves(epochs).axes) == 3
    evaluation = {run: _evaluation_entry(run) for run in RUNS}
    evaluation["scratch"]["confusion"] = {a: {p: 0 for p in CLASSES} for a in CLASSES}
    assert len(report.plot_confusion(evaluation).axes) == 2
    img = Image.new("RGB", (8, 8))
    assert len(report.plot_samples([img], []).axes) == 2  # 2 rows x 1 column
