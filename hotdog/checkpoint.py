"""State dicts and checkpoints on disk: torch.load(weights_only=True), one-line errors,
atomic saves. Free of the model code, so the weights stage does not depend on it."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from hotdog.errors import StageError
from hotdog.files import atomic_path

REQUIRED_KEYS = ("conv1.weight", "fc.weight")  # the first and last layers of a ResNet


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


def check_state_dict(state: object, source: str) -> None:
    """Require a dict of tensors holding a ResNet's conv1.weight and fc.weight."""
    if not isinstance(state, dict):
        problem = f"holds a {type(state).__name__}, not a state dict"
    elif not all(isinstance(v, torch.Tensor) for v in state.values()):
        problem = "is a dict, but not every value is a tensor"
    elif missing := [k for k in REQUIRED_KEYS if k not in state]:
        problem = f"is a state dict without {', '.join(missing)}, so not a ResNet's"
    else:
        return
    raise StageError(f"{source}: the file {problem}; check weights.url in params.yaml")


def load_weights(path: Path, source: str) -> dict[str, torch.Tensor]:
    """Pretrained weights: loaded without running pickled code, and checked to be a ResNet's."""
    state = load_state(path, source, "check weights.url in params.yaml")
    check_state_dict(state, source)
    return state


def save_checkpoint(dest: Path, state_dict: dict, run: str, params: dict, summary: dict) -> None:
    """A trained model's state dict (CPU, contiguous) with the params it was trained with."""
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(dest) as tmp:
        torch.save({"run": run, "state_dict": state, "params": params, "summary": summary}, tmp)
