"""State dicts and checkpoints on disk: torch.load(weights_only=True), one-line errors,
atomic saves. Free of the model code; what the ImageNet weights must hold is hotdog.model.weights."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import torch

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path


def load_state(path: Path, label: str, fix: str) -> dict:
    """torch.load(weights_only=True) of a dict; an error starts with `label`, ends with `fix`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StageError(f"{label} is missing; {fix}") from None
    except pickle.UnpicklingError:
        # Never fall back to weights_only=False: that would run code from the file.
        raise StageError(f"{label} cannot be loaded: it holds more than tensors and plain "
                         f"values, which weights_only=True refuses; {fix}") from None
    except Exception as err:  # a torn or foreign file fails in many ways
        reason = (str(err).splitlines() or [""])[0][:200]
        raise StageError(f"{label} cannot be loaded ({type(err).__name__}: {reason}); {fix}") from None
    if not isinstance(state, dict):
        raise StageError(f"{label} holds a {type(state).__name__}, not a dict; {fix}")
    return state


def save_checkpoint(dest: Path, state_dict: dict, run: str, params: dict, summary: dict,
                    classes: Sequence[str]) -> None:
    """A trained model's state dict (CPU, contiguous) with the params it was trained with and
    its classes (label order), so that it can be used by name without this run's data."""
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(dest) as tmp, tmp.open("wb") as f:
        # A Python file, not a path: a failed write then surfaces as the OSError with its
        # errno (disk full, file-size limit), which atomic_path turns into one line.
        torch.save({"run": run, "state_dict": state, "params": params, "summary": summary,
                    "classes": list(classes)}, f)
