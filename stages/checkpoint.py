"""Loading state dicts and checkpoints safely: torch.load(weights_only=True), one-line errors.

Its own module so that the weights stage, which uses it, does not depend on the model code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from stages.errors import StageError


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
