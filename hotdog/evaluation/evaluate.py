"""Scoring trained models on the test split, for any number of classes: accuracy beside
balanced accuracy and the majority-class baseline, per-class precision/recall/F1, the N x N
confusion, ROC-AUC (binary for two classes, macro one-vs-rest for more), top-5 accuracy past
five classes, expected calibration error, mean loss, and a predictions table."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.nn import functional as nnf

from hotdog.core import events
from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path
from hotdog.core.schema import PREDICTIONS, with_classes
from hotdog.data.transforms import EvalViews
from hotdog.evaluation.calibration import expected_calibration_error
from hotdog.model.hardware import pick_device, pick_precision
from hotdog.model.inference import Trained, predict

TOP_K = 5  # top-5 accuracy is reported when there are more classes than this


def confusion(labels: list[int], predicted: list[int], n: int) -> list[list[int]]:
    """counts[actual][predicted] over n classes."""
    counts = [[0] * n for _ in range(n)]
    for a, p in zip(labels, predicted):
        counts[a][p] += 1
    return counts


def per_class(counts: list[list[int]], classes: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support of each class from confusion counts."""
    out = {}
    for k, name in enumerate(classes):
        tp = counts[k][k]
        predicted = sum(row[k] for row in counts)
        actual = sum(counts[k])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    return out


def balanced_accuracy(classes: dict[str, dict]) -> float:
    """The mean recall over the classes the test split holds: 1/N for a model that always
    answers one class, whatever the classes' balance."""
    recalls = [c["recall"] for c in classes.values() if c["support"]]
    return sum(recalls) / len(recalls)


def roc_auc(scores: list[float], positive: list[bool]) -> float | None:
    """Area under the ROC curve (the Mann-Whitney U statistic, ties counted half).

    None when one of the two classes is absent, where the AUC is undefined.
    """
    n_pos = sum(positive)
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over runs of equal scores
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, p in zip(ranks, positive) if p)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def ovr_auc(probs: torch.Tensor, truth: list[int]) -> float | None:
    """ROC-AUC: for two classes, of class 0's probability for class 0 (as the seed's task
    asks "is it a hotdog?"); for more, the mean one-vs-rest AUC over the classes that have
    both positives and negatives in the split. None when no class has both."""
    n = probs.shape[1]
    targets = [0] if n == 2 else range(n)
    aucs = [roc_auc(probs[:, k].tolist(), [t == k for t in truth]) for k in targets]
    aucs = [a for a in aucs if a is not None]
    return sum(aucs) / len(aucs) if aucs else None


def score(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> tuple[dict, dict]:
    """(metrics, prediction columns) for one model's fp32 logits on the test split."""
    losses = nnf.cross_entropy(logits, labels, reduction="none")
    probs = logits.softmax(1)
    confidence, predicted_t = probs.max(1)
    predicted = logits.argmax(1).tolist()
    truth = labels.tolist()
    counts = confusion(truth, predicted, len(classes))
    per = per_class(counts, classes)
    correct = [a == p for a, p in zip(truth, predicted)]
    metrics = {
        "classes": list(classes),
        "images": len(truth),
        "accuracy": sum(correct) / len(truth),
        "balanced_accuracy": balanced_accuracy(per),
        "majority_accuracy": max(c["support"] for c in per.values()) / len(truth),
        "loss": losses.mean().item(),
        "roc_auc": ovr_auc(probs, truth),
        "ece": expected_calibration_error(confidence.tolist(), correct),
        "per_class": per,
        "confusion": {classes[a]: {classes[p]: counts[a][p] for p in range(len(classes))}
                      for a in range(len(classes))},
    }
    if len(classes) > TOP_K:
        top = logits.topk(TOP_K, 1).indices
        metrics[f"top{TOP_K}_accuracy"] = (top == labels[:, None]).any(1).float().mean().item()
    columns = {"label": truth, "predicted": predicted, "probabilities": probs.tolist(),
               "confidence": confidence.tolist(), "loss": losses.tolist()}
    return metrics, columns


def write_confusion(predictions: pa.Table, run: str, dest: Path) -> None:
    """One row per test image of `run`: its true and predicted class names (CSV, atomically),
    the data DVC's confusion template draws, so `dvc plots diff` shows two commits' matrices."""
    rows = predictions.filter(pc.equal(predictions["model"], run)).sort_by("path")
    with atomic_path(dest) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(rows["true_class"].to_pylist(), rows["predicted_class"].to_pylist()))


def check_classes(models: dict[str, Trained], classes: Sequence[str]) -> None:
    """Each model must know the test split's classes, in the same order."""
    for run, trained in models.items():
        if tuple(trained.classes) != tuple(classes):
            raise StageError(f"the {run} model was trained on the classes {', '.join(trained.classes)}, but the "
                             f"test split holds {', '.join(classes)}; run `dvc repro {run}`")


def evaluate(models: dict[str, Trained], views: EvalViews, paths: list[str], classes: Sequence[str],
             batch_size: int, device_name: str, precision_name: str) -> tuple[dict, pa.Table]:
    """Metrics per model and the per-image predictions table (recording the classes), for
    the views of `paths`."""
    check_classes(models, classes)
    device = pick_device(device_name)
    precision = pick_precision(precision_name, device)
    views = views.to(device)
    metrics, tables = {}, []
    for k, (run, trained) in enumerate(models.items()):
        def told(share: float, k: int = k) -> None:  # the flow's progress bar, model by model
            events.emit(events.Progress(stage="evaluate", done=(k + share) / len(models)))

        model = trained.module.to(device, memory_format=torch.channels_last)
        logits, labels = predict(model, views, batch_size, device, precision, f"evaluate {run}", told)
        metrics[run], columns = score(logits, labels, classes)
        metrics[run].update(device=device.type, precision=precision)
        tables.append(pa.table({
            "path": paths, "label": columns["label"], "true_class": [classes[i] for i in columns["label"]],
            "model": [run] * len(labels), "predicted": columns["predicted"],
            "predicted_class": [classes[i] for i in columns["predicted"]],
            "probabilities": columns["probabilities"], "confidence": columns["confidence"],
            "loss": columns["loss"]}, schema=PREDICTIONS))
    return metrics, with_classes(pa.concat_tables(tables), classes)
