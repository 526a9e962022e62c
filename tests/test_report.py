"""The report stage on a tiny fake pipeline: a few images, manifests, metrics and predictions,
for 2 classes (d2l's hotdog data, by digest) and for any other N."""

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
from hotdog.core.names import RUNS, SPLITS
from hotdog.core.params import load_params
from hotdog.core.schema import MANIFEST, PREDICTIONS, with_classes
from hotdog.evaluation import report, results
from stages import report as report_stage

REPO = Path(__file__).resolve().parents[1]
HOTDOG = ("hotdog", "not-hotdog")
OTHER_SHA1 = "1234567890abcdef1234567890abcdef12345678"  # some zip that is not d2l's

# (file name, PIL mode, format) per class folder; grey, palette, RGBA and CMYK all occur upstream.
IMAGES = [("0.png", "RGB", "PNG"), ("1.png", "L", "PNG"), ("10.png", "P", "PNG"),
          ("2.jpg", "CMYK", "JPEG"), ("3.png", "RGBA", "PNG")]
# Test mistakes per model: path -> (predicted label, confidence); every other image is right at 0.9.
PREDICTED = {
    "finetune": {"test/hotdog/1.png": (1, 0.80), "test/not-hotdog/0.png": (0, 0.70)},
    "scratch": {"test/hotdog/0.png": (1, 0.90), "test/hotdog/2.jpg": (1, 0.90),
                "test/not-hotdog/3.png": (0, 0.95)},
}
ROC_AUC = {"finetune": 0.9012, "scratch": 0.7034}
ECE = {"finetune": 0.0456, "scratch": 0.1234}
TOP5 = {"finetune": 0.9876, "scratch": 0.8766}


def _write_images(images: Path, classes: tuple[str, ...], per_class: int) -> list[dict]:
    rows = []
    for split in SPLITS:
        for label, cls in enumerate(classes):
            for k, (name, mode, fmt) in enumerate(IMAGES[:per_class]):
                rel = f"{split}/{cls}/{name}"
                dest = images / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                colour = (40 * k, (37 * label) % 256, 200 - (23 * label) % 200)
                Image.new("RGB", (40 + 8 * k, 32), colour).convert(mode).save(dest, fmt)
                rows.append({"path": rel, "label": label, "class_name": cls, "split": split,
                             "size_bytes": dest.stat().st_size, "sha1": "0" * 40,
                             "width": 40 + 8 * k, "height": 32, "format": fmt, "mode": mode})
    return sorted(rows, key=lambda r: r["path"])


def _predictions(manifest: list[dict], classes: tuple[str, ...], predicted: dict) -> list[dict]:
    """Rows of PREDICTIONS: the confidence on the predicted class, the rest spread evenly."""
    rows = []
    for run in RUNS:
        for r in (r for r in manifest if r["split"] == "test"):
            pred, conf = predicted.get(run, {}).get(r["path"], (r["label"], 0.9))
            probs = [conf if k == pred else (1 - conf) / (len(classes) - 1) for k in range(len(classes))]
            rows.append({"path": r["path"], "label": r["label"], "true_class": classes[r["label"]], "model": run,
                         "predicted": pred, "predicted_class": classes[pred], "probabilities": probs,
                         "confidence": conf, "loss": 0.5})
    return rows


def _scores(rows: list[dict], classes: tuple[str, ...]) -> dict:
    """Confusion, per-class scores and accuracies of one run's prediction rows, as evaluate.json has them."""
    confusion = {a: dict.fromkeys(classes, 0) for a in classes}
    for r in rows:
        confusion[r["true_class"]][r["predicted_class"]] += 1
    per_class = {}
    for c in classes:
        tp, support = confusion[c][c], sum(confusion[c].values())
        predicted = sum(confusion[a][c] for a in classes)
        precision, recall = tp / predicted if predicted else 0.0, tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {"classes": list(classes), "images": len(rows),
            "accuracy": sum(r["predicted"] == r["label"] for r in rows) / len(rows),
            "balanced_accuracy": sum(p["recall"] for p in per_class.values()) / len(classes),
            "majority_accuracy": max(p["support"] for p in per_class.values()) / len(rows),
            "per_class": per_class, "confusion": confusion}


def _evaluation(predictions: list[dict], classes: tuple[str, ...]) -> dict:
    evaluation = {}
    for run in RUNS:
        m = _scores([r for r in predictions if r["model"] == run], classes)
        m.update(loss=0.4, roc_auc=ROC_AUC[run], ece=ECE[run], device="cpu", precision="bf16")
        if len(classes) > 5:
            m["top5_accuracy"] = TOP5[run]
        evaluation[run] = m
    return evaluation


def _write_runs(root: Path, paths) -> None:
    for run in RUNS:
        epochs = [{"epoch": e, "loss": 0.9 / e, "train_acc": 0.5 + 0.1 * e, "test_acc": 0.55 + 0.1 * e,
                   "examples_per_sec": 30.0, "examples_per_sec_wall": 25.0, "epoch_seconds": 9.0}
                  for e in (1, 2)]
        (root / paths.run_epochs(run)).write_text(json.dumps(epochs))
        summary = {"epochs": 2, "loss": 0.4321 if run == "finetune" else 0.6543, "train_acc": 0.7456,
                   "test_acc": 0.8, "examples_per_sec": 29.64, "examples_per_sec_wall": 24.5,
                   "train_seconds": 18.0, "device": "cpu", "precision": "bf16"}
        (root / paths.run_summary(run)).write_text(json.dumps(summary))


def make_pipeline(root: Path, predicted: dict = PREDICTED, classes: tuple[str, ...] = HOTDOG,
                  per_class: int = len(IMAGES), sha1: str = results.D2L_SHA1) -> Path:
    """Write params.yaml (with data.sha1 = sha1) and every input the report reads under `root`."""
    text = (REPO / "params.yaml").read_text()
    assert results.D2L_SHA1 in text
    (root / "params.yaml").write_text(text.replace(results.D2L_SHA1, sha1))
    paths = load_params(path=root / "params.yaml").paths
    manifest = _write_images(root / paths.images, classes, per_class)
    (root / paths.manifest).mkdir(parents=True)
    for split in SPLITS:
        table = pa.Table.from_pylist([r for r in manifest if r["split"] == split], MANIFEST)
        pq.write_table(with_classes(table, classes), root / paths.manifest_file(split))
    (root / paths.metrics).mkdir(parents=True)
    summary = {"classes": list(classes), "layout": "split", "test_fraction": None,
               "duplicates": {"copies": 0, "left_out_of_train": 0}}
    for split in SPLITS:
        labels = [r["label"] for r in manifest if r["split"] == split]
        summary[split] = {"images": len(labels), "rejected": 0,
                          "per_class": {c: labels.count(i) for i, c in enumerate(classes)}}
    (root / paths.manifest_summary).write_text(json.dumps(summary))
    _write_runs(root, paths)
    predictions = _predictions(manifest, classes, predicted)
    (root / paths.evaluation).write_text(json.dumps(_evaluation(predictions, classes)))
    table = pa.Table.from_pylist(predictions, PREDICTIONS)
    pq.write_table(with_classes(table, classes), root / paths.predictions)
    return root


def run_stage(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "stages.report"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    root = make_pipeline(tmp_path_factory.mktemp("report"))
    return root, run_stage(root)


ALL_FIGURES = {report.FIG_SAMPLES, report.FIG_CURVES, report.FIG_CONFUSION, report.FIG_RECALL,
               report.FIG_RELIABILITY, report.fig_misclassified("finetune"), report.fig_misclassified("scratch")}


def _links(text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)


# ---------------------------------------------------------------- the stage end to end


def test_stage_writes_report_and_figures(built):
    root, proc = built
    assert proc.returncode == 0, proc.stderr
    text = (root / "reports/report.md").read_text()
    assert text.startswith("# Hotdog recognition")  # d2l's hotdog.zip, by digest
    for number in ("0.939", "0.843", "0.800", "0.700", "0.901", "0.703", "0.046", "0.123", "999.1", "29.6"):
        assert number in text
    assert _row(text, "data.sha1") == ["data.sha1", results.D2L_SHA1]
    links = _links(text)
    assert set(links) == ALL_FIGURES
    for link in links:
        assert not Path(link).is_absolute()
        with Image.open(root / "reports" / link) as img:
            assert img.format == "PNG" and img.width >= 300 and img.height >= 150


def test_stage_leaves_no_temporary_files(built):
    root, _ = built
    # .hotdog/ is paths.state (the run lock), a working folder, not a temporary file.
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".") and p.name != ".hotdog") == []
    assert sorted(p.name for p in (root / "reports").iterdir()) == ["figures", "model_card.md", "report.md"]
    assert sorted(p.name for p in (root / "reports/figures").iterdir()) == sorted(Path(f).name for f in ALL_FIGURES)


def test_stage_reports_missing_evaluation(tmp_path):
    root = make_pipeline(tmp_path)
    (root / "metrics/evaluate.json").unlink()
    proc = run_stage(root)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: report: metrics/evaluate.json is missing")
    assert "dvc repro evaluate" in proc.stderr
    assert not (root / "reports/report.md").exists()


# ---------------------------------------------------------------- main() in-process, any N


def _mistakes(classes: tuple[str, ...]) -> dict:
    """finetune takes class 0's first test image for class 1; scratch takes class 1's first
    for class 0, and class 0's second for the last class."""
    return {"finetune": {f"test/{classes[0]}/0.png": (1, 0.81)},
            "scratch": {f"test/{classes[1]}/0.png": (0, 0.66), f"test/{classes[0]}/1.png": (len(classes) - 1, 0.55)}}


THREE = ("cat", "dog", "fox")
TWELVE = tuple(f"class-{k:02d}" for k in range(11)) + ("a-very-long-class-name-that-goes-on",)


@pytest.mark.parametrize("classes", [("ant", "bee"), THREE, TWELVE], ids=["2", "3", "12"])
def test_main_reports_any_number_of_classes(tmp_path, monkeypatch, classes):
    root = make_pipeline(tmp_path, _mistakes(classes), classes, per_class=2, sha1=OTHER_SHA1)
    monkeypatch.chdir(root)
    report_stage.main()
    text = (root / "reports/report.md").read_text()
    assert text.startswith(f"# Image classification, {len(classes)} classes")
    assert "(d2l)" not in text and "0.939" not in text  # not d2l's data: no d2l rows
    assert [line.split(" | ")[0] for line in text.splitlines() if " (ours) | " in line or " (d2l) | " in line] == [
        "| fine-tune (ours)", "| scratch (ours)"]
    assert ("top-5 acc" in text) == (len(classes) > 5)
    assert set(_links(text)) == ALL_FIGURES
    for link in ALL_FIGURES:
        with Image.open(root / "reports" / link) as img:
            assert img.format == "PNG"
    for cls in classes:  # the per-class table and the data table name every class
        assert _row(text, cls)[0] == cls
        assert _row(text, cls)[1] == "2"  # support in the per-class table comes first
    assert _row(text, "total") == ["total", str(2 * len(classes)), str(2 * len(classes))]
    note = "the first 10 of 12 classes; 2 more not shown (class-10, a-very-long-class-name-that-goes-on)"
    assert (note in text) == (len(classes) == 12)


def test_main_without_mistakes_says_so(tmp_path, monkeypatch):
    root = make_pipeline(tmp_path, predicted={"finetune": PREDICTED["finetune"], "scratch": {}})
    monkeypatch.chdir(root)
    report_stage.main()
    text = (root / "reports/report.md").read_text()
    assert "scratch: no misclassified test images (of 10)." in text
    assert "fine-tune: 2 of 10 test images misclassified; most confident first, captioned" in text
    assert report.fig_misclassified("scratch") not in text
    assert not (root / "reports" / report.fig_misclassified("scratch")).exists()
    assert (root / "reports" / report.fig_misclassified("finetune")).exists()


def test_figures_are_byte_identical_for_the_same_inputs_drawn_alone_or_side_by_side(tmp_path, monkeypatch):
    root = make_pipeline(tmp_path, _mistakes(THREE), THREE, per_class=2, sha1=OTHER_SHA1)
    monkeypatch.chdir(root)
    inputs = report.read_inputs(load_params().paths)
    # "a" drawn one figure after another in this process, "b" side by side in worker processes
    for folder, workers in (("a", 1), ("b", 3)):
        report.write_figures(root / folder, load_params().paths.images, inputs, workers)
    names = sorted(p.name for p in (root / "a").iterdir())
    assert names == sorted(Path(f).name for f in ALL_FIGURES)
    assert [(root / "a" / n).read_bytes() == (root / "b" / n).read_bytes() for n in names] == [True] * len(names)


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_table(path: Path, edit) -> None:
    pq.write_table(edit(pq.read_table(path)), path)


@pytest.mark.parametrize("name, damage, message", [
    ("evaluation key", lambda r: _edit_json(r / "metrics/evaluate.json", lambda d: d["scratch"].pop("ece")),
     r"metrics/evaluate.json is malformed \(scratch.ece: expected a number.*dvc repro evaluate"),
    ("roc_auc text", lambda r: _edit_json(r / "metrics/evaluate.json", lambda d: d["scratch"].update(roc_auc="x")),
     r"scratch.roc_auc: expected a number or null"),
    ("confusion cell", lambda r: _edit_json(r / "metrics/evaluate.json",
                                            lambda d: d["finetune"]["confusion"]["hotdog"].pop("hotdog")),
     r"finetune.confusion.hotdog.hotdog: expected a number"),
    ("classes missing", lambda r: _edit_json(r / "metrics/evaluate.json", lambda d: d["finetune"].pop("classes")),
     r"finetune.classes: expected a list of at least 2 distinct names"),
    ("runs disagree", lambda r: _edit_json(r / "metrics/evaluate.json",
                                           lambda d: d["scratch"].update(classes=["not-hotdog", "hotdog"])),
     r"scratch.classes differ from finetune.classes"),
    ("evaluation stale", lambda r: _edit_json(r / "metrics/evaluate.json", _rename_class),
     r"metrics/evaluate.json records the classes hotdog, other, but data/manifest/test.parquet records "
     r"hotdog, not-hotdog; re-run `dvc repro evaluate`"),
    ("epochs empty", lambda r: (r / "metrics/scratch_epochs.json").write_text("[]"),
     r"metrics/scratch_epochs.json is malformed \(expected a non-empty list.*dvc repro scratch"),
    ("summary json", lambda r: (r / "metrics/finetune.json").write_text("{"),
     r"metrics/finetune.json is malformed \(not valid JSON"),
    ("manifest gone", lambda r: (r / "data/manifest/test.parquet").unlink(),
     r"data/manifest/test.parquet is missing; run `dvc repro manifest`"),
    ("manifest column", lambda r: _edit_table(r / "data/manifest/train.parquet", lambda t: t.drop(["sha1"])),
     r"train.parquet has columns .* run `dvc repro manifest`"),
    ("manifest classes unrecorded", lambda r: _edit_table(r / "data/manifest/train.parquet",
                                                          lambda t: t.replace_schema_metadata(None)),
     r"train.parquet does not record its classes .*run `dvc repro manifest`"),
    ("manifest splits disagree", lambda r: _edit_table(r / "data/manifest/test.parquet",
                                                       lambda t: with_classes(t, ["hotdog", "not-hotdog", "x"])),
     r"test.parquet records the classes hotdog, not-hotdog, x, but data/manifest/train.parquet records "
     r"hotdog, not-hotdog; re-run `dvc repro manifest`"),
    ("manifest label", lambda r: _edit_table(r / "data/manifest/train.parquet", lambda t: with_classes(
        t.set_column(1, MANIFEST.field("label"), pc.add(t["label"], 1)), HOTDOG)),
     r"train.parquet is malformed \(train/hotdog/0.png: class_name is 'hotdog', but label 1 is 'not-hotdog'\)"),
    ("manifest label range", lambda r: _edit_table(r / "data/manifest/test.parquet", lambda t: with_classes(
        t.set_column(1, MANIFEST.field("label"), pc.multiply(t["label"], 5)), HOTDOG)),
     r"test.parquet is malformed \(test/not-hotdog/0.png: label 5 is not one of its 2 classes\)"),
    ("predictions column", lambda r: _edit_table(r / "metrics/predictions.parquet", lambda t: t.drop(["confidence"])),
     r"predictions.parquet has columns .* run `dvc repro evaluate`"),
    ("predictions names", lambda r: _edit_table(r / "metrics/predictions.parquet",
                                                lambda t: with_classes(t, ["hotdog", "other"])),
     r"predictions.parquet is malformed \(test/hotdog/1.png: predicted_class is 'not-hotdog', but predicted 1 "
     r"is 'other'\); re-run `dvc repro evaluate`"),
    ("predictions stale", lambda r: _edit_table(r / "metrics/predictions.parquet",
                                                lambda t: with_classes(t, [*HOTDOG, "x"])),
     r"metrics/predictions.parquet records the classes hotdog, not-hotdog, x, but data/manifest/test.parquet "
     r"records hotdog, not-hotdog; re-run `dvc repro evaluate`"),
    ("predictions run", lambda r: _edit_table(r / "metrics/predictions.parquet",
                                              lambda t: t.filter(pc.field("model") == "finetune")),
     r"predictions.parquet is malformed \(no rows for model 'scratch'\); re-run `dvc repro evaluate`"),
    ("predictions not parquet", lambda r: (r / "metrics/predictions.parquet").write_text("junk"),
     r"predictions.parquet is not a readable Parquet file"),
])
def test_main_names_bad_input(tmp_path, monkeypatch, name, damage, message):
    root = make_pipeline(tmp_path, per_class=2)
    damage(root)
    monkeypatch.chdir(root)
    with pytest.raises(StageError, match=message) as caught:
        report_stage.main()
    assert "\n" not in str(caught.value)
    assert not (root / "reports").exists()


def _rename_class(evaluation: dict) -> None:
    for m in evaluation.values():
        m["classes"] = ["hotdog", "other"]
        m["per_class"]["other"] = m["per_class"].pop("not-hotdog")
        m["confusion"] = {a: {p: 1 for p in m["classes"]} for a in m["classes"]}


def test_top5_is_required_past_five_classes(tmp_path, monkeypatch):
    classes = tuple("abcdef")
    root = make_pipeline(tmp_path, _mistakes(classes), classes, per_class=1, sha1=OTHER_SHA1)
    _edit_json(root / "metrics/evaluate.json", lambda d: d["finetune"].pop("top5_accuracy"))
    monkeypatch.chdir(root)
    with pytest.raises(StageError, match=r"finetune.top5_accuracy: expected a number past five classes"):
        report_stage.main()


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


# ---------------------------------------------------------------- pure functions


def _manifest(*per_class: int) -> list[dict]:
    return [{"path": f"train/c{label}/{i:02d}.png", "label": label}
            for label, n in enumerate(per_class) for i in range(n)]


def test_select_samples_takes_the_first_of_each_class():
    rows = report.select_samples(_manifest(10, 12, 3), ("a", "b", "c"))
    assert [r["path"] for r in rows[0]] == [f"train/c0/{i:02d}.png" for i in range(8)]
    assert [r["path"] for r in rows[1]] == [f"train/c1/{i:02d}.png" for i in range(8)]
    assert [r["path"] for r in rows[2]] == [f"train/c2/{i:02d}.png" for i in range(3)]


def test_select_samples_shows_ten_classes_at_most():
    classes = tuple(f"k{i}" for i in range(12))
    rows = report.select_samples(_manifest(*[2] * 12), classes)
    assert len(rows) == 10 and {r["label"] for row in rows for r in row} == set(range(10))
    assert report.samples_note(classes) == "the first 10 of 12 classes; 2 more not shown (k10, k11)"
    assert report.samples_note(classes[:10]) is None
    assert report.samples_note(tuple(f"k{i}" for i in range(17))).endswith("7 more not shown (k10, k11, k12, k13 "
                                                                         "and 3 more)")


def test_sample_grid_titles_and_note():
    img = Image.new("RGB", (8, 8))
    fig = report.plot_samples([[img], [img, img]], ("ant", "bee"))
    assert fig.get_suptitle() == "Training images"
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["ant", "bee", "bee"]
    classes = tuple(f"k{i}" for i in range(11))
    fig = report.plot_samples([[img]] * 10, classes)
    assert " ".join(fig.get_suptitle().split()) == "Training images: the first 10 of 11 classes; 1 more not shown (k10)"
    assert len(fig.axes) == 10


def _prediction(path: str, label: int, predicted: int, confidence: float, model: str = "finetune") -> dict:
    names = ("cat", "dog", "fox")
    return {"path": path, "label": label, "true_class": names[label], "model": model, "predicted": predicted,
            "predicted_class": names[predicted], "confidence": confidence}


def test_select_misclassified_order_and_cap():
    rows = [
        _prediction("b", 0, 1, 0.70), _prediction("a", 2, 0, 0.70), _prediction("c", 1, 2, 0.99),
        _prediction("d", 0, 0, 0.99),  # right
        _prediction("e", 0, 1, 0.99, model="scratch"),  # other run
        _prediction("f", 0, 2, 0.55),
    ]
    assert [r["path"] for r in report.select_misclassified(rows, "finetune")] == ["c", "a", "b", "f"]
    assert [r["path"] for r in report.select_misclassified(rows, "finetune", limit=2)] == ["c", "a"]
    assert report.select_misclassified(rows[3:4], "finetune") == []
    assert report.mistake_counts(rows, limit=2) == {
        "finetune": {"images": 5, "wrong": 4, "shown": 2},
        "scratch": {"images": 1, "wrong": 1, "shown": 1},
    }


def test_mistake_captions_carry_class_names():
    rows = [_prediction("c", 1, 2, 0.987), _prediction("a", 2, 0, 0.7)]
    assert report.mistake_caption(rows[0]) == "dog → fox (0.99)"
    img = Image.new("RGB", (8, 8))
    fig = report.plot_misclassified(rows, [img, img], "scratch")
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["dog → fox (0.99)", "fox → cat (0.70)"]
    long = {**rows[0], "true_class": "a-very-long-class-name-that-goes-on"}
    assert report.mistake_caption(long) == "a-very-long-class-n… → fox (0.99)"


def test_class_counts():
    counts = report.class_counts({"train": _manifest(3, 2, 1), "test": _manifest(0, 1)}, ("a", "b", "c"))
    assert counts == {"train": {"a": 3, "b": 2, "c": 1}, "test": {"a": 0, "b": 1, "c": 0}}


def _evaluation_of(classes: tuple[str, ...], predicted: dict | None = None) -> dict:
    manifest = [{"path": f"test/{c}/{k}.png", "label": i, "split": "test"}
                for i, c in enumerate(classes) for k in range(4)]
    return _evaluation(_predictions(manifest, classes, predicted or _mistakes(classes)), classes)


def _summaries() -> dict:
    return {run: {"loss": loss, "train_acc": acc, "examples_per_sec": 29.64,
                  "examples_per_sec_wall": 24.96, "device": "cuda", "precision": "bf16"}
            for run, loss, acc in (("finetune", 0.2049, 0.9312), ("scratch", 0.3811, 0.8222))}


def _render(mistakes=None, classes: tuple[str, ...] = HOTDOG, d2l: bool = True) -> str:
    evaluation = _evaluation_of(classes)
    counts = {"train": dict.fromkeys(classes, 1000), "test": dict.fromkeys(classes, 400)}
    mistakes = mistakes or {run: {"images": 800, "wrong": 50, "shown": 32} for run in RUNS}
    return report.render_markdown(_summaries(), evaluation, counts, [("seed", "0"), ("finetune.lr", "5e-05")],
                                  mistakes, d2l)


def _row(text: str, first_cell: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_render_markdown_comparison_table_with_d2l():
    text = _render()
    assert _row(text, "run") == ["run", "train loss", "train acc", "test acc", "balanced acc", "majority baseline",
                                 "ROC-AUC", "ECE", "examples/sec", "examples/sec (wall)", "device", "precision"]
    # Four test images per class: finetune gets one hotdog wrong, scratch one of each class.
    assert _row(text, "fine-tune (ours)") == ["fine-tune (ours)", "0.205", "0.931", "0.875", "0.875", "0.500",
                                              "0.901", "0.046", "29.6", "25.0", "cuda", "bf16"]
    assert _row(text, "fine-tune (d2l)")[1:8] == ["0.220", "0.915", "0.939", "—", "0.500", "—", "—"]
    assert _row(text, "scratch (ours)")[1:8] == ["0.381", "0.822", "0.750", "0.750", "0.500", "0.703", "0.123"]
    assert _row(text, "scratch (d2l)")[1:4] == ["0.374", "0.839", "0.843"]
    assert "ROC-AUC is of the probability of hotdog, for hotdog against not-hotdog" in text
    assert _row(text, "finetune.lr") == ["finetune.lr", "5e-05"]
    assert _row(text, "hotdog")[:2] == ["hotdog", "4"]  # the per-class table: support first
    assert _row(text, "total") == ["total", "2000", "800"]


def test_render_markdown_leaves_out_d2l_for_other_data():
    text = _render(classes=THREE, d2l=False)
    assert "(d2l)" not in text and "0.939" not in text and "Hotdog" not in text
    assert "d2l's published figures are for its hotdog.zip" in text
    assert "ROC-AUC is the mean one-vs-rest AUC" in text
    assert _row(text, "scratch (ours)")[1:3] == ["0.381", "0.822"]
    # per-class table: class, support, then precision/recall/F1 of each run; fox is never wrong for finetune
    assert _row(text, "fox") == ["fox", "4", "1.000", "1.000", "1.000", "0.800", "1.000", "0.889"]
    assert _row(text, "dog")[:5] == ["dog", "4", "0.800", "1.000", "0.889"]
    assert _row(text, "cat") == ["cat", "4", "1.000", "0.750", "0.857", "0.750", "0.750", "0.750"]


def test_render_markdown_top5_column_past_five_classes():
    text = _render(classes=TWELVE, d2l=False)
    header = _row(text, "run")
    assert header[8] == "top-5 acc"
    assert _row(text, "fine-tune (ours)")[8] == "0.988" and _row(text, "scratch (ours)")[8] == "0.877"
    assert "top-5: the true class among the five most probable" in text
    assert "the first 10 of 12 classes" in text


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


def test_comparison_rows_d2l_only_by_digest():
    evaluation = _evaluation_of(HOTDOG)
    evaluation["scratch"]["roc_auc"] = None  # undefined, as evaluate writes it for a one-class split
    assert results.is_d2l_data(results.D2L_SHA1) and results.is_d2l_data(results.D2L_SHA1.upper())
    assert not results.is_d2l_data(OTHER_SHA1)
    ours = results.comparison_rows(_summaries(), evaluation, d2l=False)
    assert [r[0] for r in ours] == ["fine-tune (ours)", "scratch (ours)"]
    assert ours[1][6] == "—"
    both = results.comparison_rows(_summaries(), evaluation, d2l=True)
    assert [r[0] for r in both] == ["fine-tune (ours)", "fine-tune (d2l)", "scratch (ours)", "scratch (d2l)"]
    assert all(len(r) == len(results.comparison_header(evaluation)) for r in both)


def test_param_rows_cover_declared_sections(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    p = load_params(*report_stage.PARAMS, path=tmp_path / "params.yaml")
    rows = report.param_rows({"seed": p.seed, "data.url": p.data.url, "data.sha1": p.data.sha1},
                             {section: getattr(p, section) for section in report_stage.SECTIONS})
    keys = [k for k, _ in rows]
    assert keys[:3] == ["seed", "data.url", "data.sha1"] and "train.epochs" in keys and "scratch.head_init" in keys
    assert dict(rows)["finetune.pretrained"] == "true"
    assert not any(k.startswith(("data.classes", "weights.", "paths.", "runtime.")) for k in keys)
    # As params.yaml spells them, not Python's None: a folder's data.sha1, an unset data.classes.
    assert dict(report.param_rows({"data.sha1": None}, {}))["data.sha1"] == "null"


# ---------------------------------------------------------------- figures


def test_plots_work_with_one_epoch_and_zero_counts():
    epochs = {run: [{"epoch": 1, "loss": 0.5, "train_acc": 0.7, "test_acc": 0.8}] for run in RUNS}
    curves = report.plot_curves(epochs)
    assert len(curves.axes) == 3
    assert all(ax.get_xlim() == (0.5, 1.5) for ax in curves.axes)  # not 0.96 to 1.04
    evaluation = _evaluation_of(HOTDOG)
    evaluation["scratch"]["confusion"] = {a: dict.fromkeys(HOTDOG, 0) for a in HOTDOG}
    assert len(report.plot_confusion(evaluation).axes) == 3  # two heat-maps and the colour bar
    img = Image.new("RGB", (8, 8))
    assert len(report.plot_samples([[img], []], HOTDOG).axes) == 2  # 2 rows x 1 column


def test_confusion_heat_map_is_normalised_by_true_class():
    evaluation = _evaluation_of(THREE)
    evaluation["finetune"]["confusion"]["fox"] = dict.fromkeys(THREE, 0)  # fox absent from the test split
    fig = report.plot_confusion(evaluation)
    finetune, scratch = fig.axes[:2]
    shown = finetune.images[0].get_array()
    assert [round(float(v), 2) for v in shown[0]] == [0.75, 0.25, 0.0]
    assert bool(shown.mask[2].all())  # an empty row stays blank, not 0/0
    assert [round(float(sum(row)), 6) for row in scratch.images[0].get_array()] == [1.0, 1.0, 1.0]
    assert [t.get_text() for t in finetune.get_xticklabels()] == list(THREE)
    assert [t.get_text() for t in finetune.get_yticklabels()] == list(THREE)
    assert "0.75" in [t.get_text() for t in finetune.texts]


def test_confusion_heat_map_stays_readable_for_many_classes():
    classes = tuple(f"class-{k}" for k in range(20))
    fig = report.plot_confusion(_evaluation_of(classes))
    ax = fig.axes[0]
    assert [t.get_rotation() for t in ax.get_xticklabels()] == [45.0] * 20
    assert len(ax.texts) == 0  # past ANNOTATE_UP_TO classes, colour alone
    assert fig.get_figwidth() > report.plot_confusion(_evaluation_of(THREE)).get_figwidth()


def test_recall_bars_show_both_runs_per_class():
    evaluation = _evaluation_of(THREE)
    ax = report.plot_recall(evaluation).axes[0]
    heights = [round(p.get_height(), 3) for p in ax.patches]
    expected = [round(evaluation[run]["per_class"][c]["recall"], 3) for run in RUNS for c in THREE]
    assert heights == expected == [0.75, 1.0, 1.0, 0.75, 0.75, 1.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(THREE)
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == [
        "fine-tune", "fine-tune balanced accuracy 0.917", "scratch", "scratch balanced accuracy 0.833"]


def test_reliability_diagram_has_both_runs_the_diagonal_and_ece():
    evaluation = _evaluation_of(THREE)
    predictions = [_prediction("a", 0, 0, 0.95), _prediction("b", 1, 2, 0.95), _prediction("c", 2, 2, 0.5),
                   _prediction("d", 0, 0, 0.6, model="scratch")]
    bins = report.reliability(predictions)
    assert [(b["count"], b["accuracy"]) for b in bins["finetune"] if b["count"]] == [(1, 1.0), (2, 0.5)]
    fig = report.plot_reliability(bins, evaluation)
    top = fig.axes[0]
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert legend == ["calibrated", "fine-tune (ECE 0.046)", "scratch (ECE 0.123)"]
    diagonal, finetune = top.lines[0], top.lines[1]
    assert list(diagonal.get_xdata()) == [0, 1] == list(diagonal.get_ydata())
    assert list(finetune.get_xdata()) == [0.5, 0.95] and list(finetune.get_ydata()) == [1.0, 0.5]
