"""Using a trained model: the one checkpoint loader and the one batched forward pass that
evaluation and every later consumer share. Inputs come through transforms.eval_view."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import nn

from hotdog.core.errors import StageError
from hotdog.core.progress import tracked
from hotdog.data.transforms import EvalViews, normalize
from hotdog.model.checkpoint import load_state
from hotdog.model.hardware import autocast
from hotdog.model.resnet import build_model


class Trained(NamedTuple):
    """A training stage's checkpoint, loaded: the model on the CPU, the params it was trained
    with, and its classes in label order."""

    module: nn.Module
    params: dict
    classes: tuple[str, ...]


def load_trained(path: Path, fix: str) -> Trained:
    """A training stage's checkpoint, loaded with weights_only=True; any problem is one
    StageError line naming the file and ending in `fix`."""
    label = f"checkpoint {path}"
    checkpoint = load_state(path, label, fix)
    state, classes = checkpoint.get("state_dict"), checkpoint.get("classes")
    if not isinstance(state, dict):
        raise StageError(f"{label} has no state_dict; {fix}")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise StageError(f"{label} does not record its classes (an older version wrote it); {fix}")
    model = build_model(None, "default", classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise StageError(f"{label} does not hold this project's ResNet-18 for its {len(classes)} classes "
                         f"({first}); {fix}") from None
    return Trained(model, checkpoint.get("params", {}), tuple(classes))


@torch.inference_mode()
def forward(model: nn.Module, views: torch.Tensor, device: torch.device, precision: str) -> torch.Tensor:
    """fp32 logits (on `device`) of one batch of uint8 NCHW test views; `model` is on `device`."""
    model.eval()
    x = normalize(views.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        return model(x).float()


def predict(model: nn.Module, views: EvalViews, batch_size: int, device: torch.device, precision: str,
            desc: str | None = None, on_tenth: Callable[[float], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 logits, labels) on the CPU for every view, in order; progress under `desc`
    (hotdog.core.progress.tracked)."""
    batches = tracked(views.batches(batch_size), -(-len(views.labels) // batch_size), desc, "batch", on_tenth)
    all_logits = [forward(model, x, device, precision) for x, _ in batches]
    logits = torch.cat(all_logits) if all_logits else torch.empty(0, model.fc.out_features)
    return logits.cpu(), views.labels.cpu()
