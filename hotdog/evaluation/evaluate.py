"""Scoring trained models on the test split: accuracy beside balanced accuracy and the
majority-class baseline, per-class precision/recall/F1, ROC-AUC, mean loss and confusion
counts per model, and a predictions table."""

from __future__ import annotations

import pyarrow as pa
import torch
from torch import nn
from torch.nn import functional as nnf

from hotdog.core.names import CLASSES, POSITIVE
from hotdog.core.schema import PREDICTIONS
from hotdog.data.transforms import EvalViews
from hotdog.model.hardware import pick_device, pick_precision
from hotdog.model.inference import predict


def confusion(labels: list[int], predicted: list[int]) -> list[list[int]]:
    """counts[actual][predicted] over len(CLASSES) classes."""
    counts = [[0] * len(CLASSES) for _ in CLASSES]
    for a, p in zip(labels, predicted):
        counts[a][p] += 1
    return counts


def per_class(counts: list[list[int]]) -> dict[str, dict]:
    """Precision, recall, F1 and support of each class from confusion counts."""
    out = {}
    for k, name in enumerate(CLASSES):
        tp = counts[k][k]
        predicted = sum(row[k] for row in counts)
        actual = sum(counts[k])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    return out


def balanced_accuracy(classes: dict[str, dict]) -> float:
    """The mean recall over the classes the test split holds: 0.5 for a model that always
    answers one class on a split of two, whatever their balance."""
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


def score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[dict, dict]:
    """(metrics, prediction columns) for one model's fp32 logits on the test split."""
    losses = nnf.cross_entropy(logits, labels, reduction="none")
    prob_hotdog = logits.softmax(1)[:, POSITIVE]
    predicted = logits.argmax(1).tolist()
    truth = labels.tolist()
    counts = confusion(truth, predicted)
    classes = per_class(counts)
    metrics = {
        "images": len(truth),
        "accuracy": sum(a == p for a, p in zip(truth, predicted)) / len(truth),
        "balanced_accuracy": balanced_accuracy(classes),
        "majority_accuracy": max(c["support"] for c in classes.values()) / len(truth),
        "loss": losses.mean().item(),
        "roc_auc": roc_auc(prob_hotdog.tolist(), [t == POSITIVE for t in truth]),
        "per_class": classes,
        "confusion": {CLASSES[a]: {CLASSES[p]: counts[a][p] for p in range(len(CLASSES))}
                      for a in range(len(CLASSES))},
    }
    columns = {"label": truth, "predicted": predicted,
               "prob_hotdog": prob_hotdog.tolist(), "loss": losses.tolist()}
    return metrics, columns


def evaluate(models: dict[str, nn.Module], views: EvalViews, paths: list[str], batch_size: int,
             device_name: str, precision_name: str) -> tuple[dict, pa.Table]:
    """Metrics per model and the per-image predictions table, for the views of `paths`."""
    device = pick_device(device_name)
    precision = pick_precision(precision_name, device)
    views = views.to(device)
    metrics, tables = {}, []
    for run, model in models.items():
        model = model.to(device, memory_format=torch.channels_last)
        logits, labels = predict(model, views, batch_size, device, precision)
        metrics[run], columns = score(logits, labels)
        metrics[run].update(device=device.type, precision=precision)
        tables.append(pa.table({"path": paths, "label": columns["label"],
                                "model": [run] * len(labels), "predicted": columns["predicted"],
                                "prob_hotdog": columns["prob_hotdog"], "loss": columns["loss"]},
                               schema=PREDICTIONS))
    return metrics, pa.concat_tables(tables)
