"""The pipeline's results as the report and the flow read them: each metrics file checked
for the fields they use, the classes every input records checked to agree, and the table of
both runs (beside d2l's published figures when the data is d2l's hotdog.zip). Free of
plotting and of torch, so the flow can import it."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from hotdog.core.errors import StageError
from hotdog.core.names import RUNS
from hotdog.core.paths import Paths
from hotdog.core.schema import MANIFEST, PREDICTIONS, classes_of, read_table
from hotdog.data.layout import class_list

# Published in d2l's "Fine-Tuning" page (the seed); measured there on two GPUs with
# nn.DataParallel, so the speeds are not comparable to ours, only the accuracies.
SEED_PUBLISHED = {
    "finetune": {"loss": 0.220, "train_acc": 0.915, "test_acc": 0.939, "examples_per_sec": 999.1},
    "scratch": {"loss": 0.374, "train_acc": 0.839, "test_acc": 0.843, "examples_per_sec": 1623.8},
}
# d2l's hotdog.zip, the only data set those figures were measured on: they are shown only
# when data.sha1 names it.
D2L_SHA1 = "fba480ffa8aa7e0febbb511d181409f899b9baa5"
D2L_MAJORITY = 0.5  # d2l's test split: 400 hotdogs, 400 not
RUN_TITLES = {"finetune": "fine-tune", "scratch": "scratch"}
# The stage to re-run when an input is missing or malformed (names as in dvc.yaml);
# each run's metrics come from the stage named after the run.
PRODUCERS = {"images": "download", "manifest": "manifest", "evaluate": "evaluate"}
TOP5 = "top5_accuracy"  # in evaluate.json only past five classes


class Labelled(NamedTuple):
    """A table's rows and the classes (label order) it records."""

    classes: tuple[str, ...]
    rows: list[dict]


def missing(path: Path, stage: str) -> StageError:
    """The error for an input file that is not there; `stage` writes it."""
    return StageError(f"{path} is missing; run `dvc repro {stage}`")


def malformed(path: Path, stage: str, what: str) -> StageError:
    """The error for an input file that is there but wrong; `stage` writes it."""
    return StageError(f"{path} is malformed ({what}); re-run `dvc repro {stage}`")


def is_d2l_data(sha1: str | None) -> bool:
    """Whether params' data.sha1 names d2l's hotdog.zip (null: a folder, which is not)."""
    return sha1 is not None and sha1.lower() == D2L_SHA1


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


def _classes_problem(classes: Any, where: str) -> str | None:
    if (not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes)
            or len(set(classes)) != len(classes)):
        return f"{where}classes: expected a list of at least 2 distinct names, got {classes!r}"
    return None


def _per_class_problem(m: dict, classes: list[str], where: str) -> str | None:
    """per_class and confusion: an entry for every class, the confusion a row per class."""
    for cls in classes:
        per_class = m["per_class"].get(cls) if isinstance(m.get("per_class"), dict) else None
        actual = m["confusion"].get(cls) if isinstance(m.get("confusion"), dict) else None
        problem = _check(per_class, ("precision", "recall", "f1", "support"), (), f"{where}per_class.{cls}.")
        problem = problem or _check(actual, classes, (), f"{where}confusion.{cls}.")
        if problem:
            return problem
    return None


def _run_problem(m: Any, where: str) -> str | None:
    numbers = ("accuracy", "balanced_accuracy", "majority_accuracy", "loss", "ece", "images")
    problem = _check(m, numbers, ("device", "precision"), where) or _classes_problem(m.get("classes"), where)
    if problem:
        return problem
    if m.get("roc_auc") is not None and not _is_number(m["roc_auc"]):
        return f"{where}roc_auc: expected a number or null, got {m['roc_auc']!r}"
    if len(m["classes"]) > 5 and not _is_number(m.get(TOP5)):
        return f"{where}{TOP5}: expected a number past five classes, got {m.get(TOP5)!r}"
    return _per_class_problem(m, m["classes"], where)


def _evaluation_problem(evaluation: Any) -> str | None:
    if not isinstance(evaluation, dict):
        return "expected an object keyed by run"
    for run in RUNS:
        problem = _run_problem(evaluation.get(run), f"{run}.")
        if problem:
            return problem
    first, *others = RUNS
    for run in others:
        if evaluation[run]["classes"] != evaluation[first]["classes"]:
            return f"{run}.classes differ from {first}.classes"
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
    """evaluate.json, checked: every run scored on the same classes, each one's entries there."""
    evaluation = _load_json(paths.evaluation, PRODUCERS["evaluate"])
    problem = _evaluation_problem(evaluation)
    if problem:
        raise malformed(paths.evaluation, PRODUCERS["evaluate"], problem)
    return evaluation


def evaluated_classes(evaluation: dict) -> tuple[str, ...]:
    """The classes a checked evaluate.json scored, in label order."""
    return tuple(evaluation[RUNS[0]]["classes"])


def _labels_problem(rows: Sequence[dict], classes: Sequence[str], pairs: Iterable[tuple[str, str]]) -> str | None:
    """The first row whose label (index, name) pairs do not match `classes`."""
    for row in rows:
        for index, name in pairs:
            if not 0 <= row[index] < len(classes):
                return f"{row['path']}: {index} {row[index]} is not one of its {len(classes)} classes"
            if row[name] != classes[row[index]]:
                return f"{row['path']}: {name} is {row[name]!r}, but {index} {row[index]} is {classes[row[index]]!r}"
    return None


def read_manifest(path: Path) -> Labelled:
    """A split's manifest rows (path, label, class_name) and classes, schema-checked."""
    stage = PRODUCERS["manifest"]
    table = read_table(path, MANIFEST, stage)
    classes = classes_of(table, path, stage)
    rows = table.select(["path", "label", "class_name"]).to_pylist()
    problem = _labels_problem(rows, classes, [("label", "class_name")])
    if problem:
        raise malformed(path, stage, problem)
    return Labelled(classes, rows)


PREDICTION_COLUMNS = ["path", "label", "true_class", "model", "predicted", "predicted_class", "confidence"]


def read_predictions(paths: Paths) -> Labelled:
    """predictions.parquet (less the probabilities), schema-checked, with rows for every run."""
    stage = PRODUCERS["evaluate"]
    table = read_table(paths.predictions, PREDICTIONS, stage)
    classes = classes_of(table, paths.predictions, stage)
    rows = table.select(PREDICTION_COLUMNS).to_pylist()
    problem = _labels_problem(rows, classes, [("label", "true_class"), ("predicted", "predicted_class")])
    if problem:
        raise malformed(paths.predictions, stage, problem)
    for run in RUNS:
        if not any(r["model"] == run for r in rows):
            raise malformed(paths.predictions, stage, f"no rows for model {run!r}")
    return Labelled(classes, rows)


def stale_classes(path: Path, stage: str, classes: Sequence[str], reference: Path,
                  expected: Sequence[str]) -> StageError:
    """The error for an input recording other classes than the one it was made from."""
    return StageError(f"{path} records the classes {class_list(classes)}, but {reference} records "
                      f"{class_list(expected)}; re-run `dvc repro {stage}`")


# ---------------------------------------------------------------- the comparison table

# Test accuracy stands beside balanced accuracy and the majority baseline (always answering
# the test split's largest class): on an unbalanced split a model at 0.75 may have learned nothing.
COMPARISON_HEAD = ("run", "train loss", "train acc", "test acc", "balanced acc", "majority baseline",
                   "ROC-AUC", "ECE")
COMPARISON_TAIL = ("examples/sec", "examples/sec (wall)", "device", "precision")


def comparison_header(evaluation: dict) -> tuple[str, ...]:
    """The comparison table's columns; top-5 accuracy only where evaluate.json has it."""
    top5 = ("top-5 acc",) if TOP5 in evaluation[RUNS[0]] else ()
    return COMPARISON_HEAD + top5 + COMPARISON_TAIL


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ours(run: str, s: dict, m: dict, top5: bool) -> tuple[str, ...]:
    return (f"{RUN_TITLES[run]} (ours)", _number(s["loss"]), _number(s["train_acc"]), _number(m["accuracy"]),
            _number(m["balanced_accuracy"]), _number(m["majority_accuracy"]), _number(m.get("roc_auc")),
            _number(m["ece"]), *((_number(m.get(TOP5)),) if top5 else ()), _number(s["examples_per_sec"], 1),
            _number(s["examples_per_sec_wall"], 1), s["device"], s["precision"])


def _published(run: str, top5: bool) -> tuple[str, ...]:
    seed = SEED_PUBLISHED[run]
    return (f"{RUN_TITLES[run]} (d2l)", _number(seed["loss"]), _number(seed["train_acc"]),
            _number(seed["test_acc"]), "—", _number(D2L_MAJORITY), "—", "—", *(("—",) if top5 else ()),
            _number(seed["examples_per_sec"], 1), "—", "2 GPUs", "fp32")


def comparison_rows(summaries: dict, evaluation: dict, d2l: bool) -> list[tuple[str, ...]]:
    """Both runs, one row each as formatted strings (comparison_header's columns); each
    followed by d2l's published figures when `d2l` (the data is d2l's hotdog.zip)."""
    top5 = TOP5 in evaluation[RUNS[0]]
    rows = []
    for run in RUNS:
        rows.append(_ours(run, summaries[run], evaluation[run], top5))
        if d2l:
            rows.append(_published(run, top5))
    return rows
