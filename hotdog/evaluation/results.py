"""The pipeline's results as the report and the flow read them: each metrics file checked
for the fields they use, and the table of both runs beside d2l's published figures.
Free of plotting, so the flow can import it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

from hotdog.core.errors import StageError
from hotdog.core.names import CLASSES, RUNS
from hotdog.core.paths import Paths
from hotdog.core.schema import MANIFEST, PREDICTIONS, read_table

# Published in d2l's "Fine-Tuning" page (the seed); measured there on two GPUs with
# nn.DataParallel, so the speeds are not comparable to ours, only the accuracies.
SEED_PUBLISHED = {
    "finetune": {"loss": 0.220, "train_acc": 0.915, "test_acc": 0.939, "examples_per_sec": 999.1},
    "scratch": {"loss": 0.374, "train_acc": 0.839, "test_acc": 0.843, "examples_per_sec": 1623.8},
}
RUN_TITLES = {"finetune": "fine-tune", "scratch": "scratch"}
# The stage to re-run when an input is missing or malformed (names as in dvc.yaml);
# each run's metrics come from the stage named after the run.
PRODUCERS = {"images": "download", "manifest": "manifest", "evaluate": "evaluate"}


def missing(path: Path, stage: str) -> StageError:
    """The error for an input file that is not there; `stage` writes it."""
    return StageError(f"{path} is missing; run `dvc repro {stage}`")


def malformed(path: Path, stage: str, what: str) -> StageError:
    """The error for an input file that is there but wrong; `stage` writes it."""
    return StageError(f"{path} is malformed ({what}); re-run `dvc repro {stage}`")


def _load_json(path: Path, stage: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise missing(path, stage) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise malformed(path, stage, f"not valid JSON: {err}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(obj: Any, numbers: Iterable[str], strings: Iterable[str], where: str) -> str | None:
    """The first problem with `obj`'s fields as a phrase, or None when it is fine."""
    if not isinstance(obj, dict):
        return f"{where.rstrip('.') or 'top level'}: expected an object"
    for key in numbers:
        if not _is_number(obj.get(key)):
            return f"{where}{key}: expected a number, got {obj.get(key)!r}"
    for key in strings:
        if not isinstance(obj.get(key), str):
            return f"{where}{key}: expected a string, got {obj.get(key)!r}"
    return None


def _epochs_problem(epochs: Any) -> str | None:
    if not isinstance(epochs, list) or not epochs:
        return "expected a non-empty list of epochs"
    for i, row in enumerate(epochs):
        problem = _check(row, ("epoch", "loss", "train_acc", "test_acc"), (), f"[{i}].")
        if problem:
            return problem
    return None


def _evaluation_problem(evaluation: Any) -> str | None:
    if not isinstance(evaluation, dict):
        return "expected an object keyed by run"
    for run in RUNS:
        m = evaluation.get(run)
        numbers = ("accuracy", "balanced_accuracy", "majority_accuracy", "loss", "roc_auc", "images")
        problem = _check(m, numbers, ("device", "precision"), f"{run}.")
        if problem:
            return problem
        for cls in CLASSES:
            per_class = m["per_class"].get(cls) if isinstance(m.get("per_class"), dict) else None
            actual = m["confusion"].get(cls) if isinstance(m.get("confusion"), dict) else None
            problem = _check(per_class, ("precision", "recall", "f1", "support"), (), f"{run}.per_class.{cls}.")
            problem = problem or _check(actual, CLASSES, (), f"{run}.confusion.{cls}.")
            if problem:
                return problem
    return None


def read_runs(paths: Paths) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Each run's per-epoch metrics and summary, checked."""
    epochs, summaries = {}, {}
    for run in RUNS:
        stage = run  # dvc.yaml names each run's training stage after the run
        epochs[run] = _load_json(paths.run_epochs(run), stage)
        problem = _epochs_problem(epochs[run])
        if problem:
            raise malformed(paths.run_epochs(run), stage, problem)
        summaries[run] = _load_json(paths.run_summary(run), stage)
        numbers = ("loss", "train_acc", "examples_per_sec", "examples_per_sec_wall")
        problem = _check(summaries[run], numbers, ("device", "precision"), "")
        if problem:
            raise malformed(paths.run_summary(run), stage, problem)
    return epochs, summaries


def read_evaluation(paths: Paths) -> dict:
    """evaluate.json, checked."""
    evaluation = _load_json(paths.evaluation, PRODUCERS["evaluate"])
    problem = _evaluation_problem(evaluation)
    if problem:
        raise malformed(paths.evaluation, PRODUCERS["evaluate"], problem)
    return evaluation


def read_manifest(path: Path) -> list[dict]:
    """A split's manifest rows (path, label, class_name), schema-checked."""
    table = read_table(path, MANIFEST, PRODUCERS["manifest"])
    return table.select(["path", "label", "class_name"]).to_pylist()


def read_predictions(paths: Paths) -> list[dict]:
    """predictions.parquet, schema-checked, with rows for every run."""
    table = read_table(paths.predictions, PREDICTIONS, PRODUCERS["evaluate"])
    rows = table.select(["path", "label", "model", "predicted", "prob_hotdog"]).to_pylist()
    for run in RUNS:
        if not any(r["model"] == run for r in rows):
            raise malformed(paths.predictions, PRODUCERS["evaluate"], f"no rows for model {run!r}")
    return rows


# Test accuracy stands beside balanced accuracy and the majority baseline (always answering
# the split's larger class): on an unbalanced split a model at 0.75 may have learned nothing.
COMPARISON_HEADER = ("run", "train loss", "train acc", "test acc", "balanced acc", "majority baseline",
                     "ROC-AUC", "examples/sec", "examples/sec (wall)", "device", "precision")
D2L_MAJORITY = 0.5  # d2l's test split: 400 hotdogs, 400 not


def comparison_rows(summaries: dict, evaluation: dict) -> list[tuple[str, ...]]:
    """Both runs and d2l's published figures, one row each, as formatted strings."""
    rows = []
    for run in RUNS:
        s, m, seed = summaries[run], evaluation[run], SEED_PUBLISHED[run]
        rows.append((f"{RUN_TITLES[run]} (ours)", f"{s['loss']:.3f}", f"{s['train_acc']:.3f}",
                     f"{m['accuracy']:.3f}", f"{m['balanced_accuracy']:.3f}", f"{m['majority_accuracy']:.3f}",
                     f"{m['roc_auc']:.3f}", f"{s['examples_per_sec']:.1f}", f"{s['examples_per_sec_wall']:.1f}",
                     s["device"], s["precision"]))
        rows.append((f"{RUN_TITLES[run]} (d2l)", f"{seed['loss']:.3f}", f"{seed['train_acc']:.3f}",
                     f"{seed['test_acc']:.3f}", "—", f"{D2L_MAJORITY:.3f}", "—", f"{seed['examples_per_sec']:.1f}",
                     "—", "2 GPUs", "fp32"))
    return rows
