"""State dicts and checkpoints on disk: torch.load(weights_only=True), one-line errors,
atomic saves. Free of the model code, so the weights stage does not depend on it."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import torch

from hotdog.errors import StageError
from hotdog.files import atomic_path

NAMED = 3  # keys named per kind of problem; the rest are counted
# BatchNorm's step counter: files saved before torch 0.4.1, torchvision's ImageNet weights
# among them, lack it, and load_state_dict fills it in (for unversioned or version-1 BN).
OPTIONAL_SUFFIX = ".num_batches_tracked"


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
    """Require a dict of tensors with exactly the keys and shapes of ImageNet's ResNet-18."""
    if not isinstance(state, dict):
        problem = f"holds a {type(state).__name__}, not a state dict"
    elif not all(isinstance(v, torch.Tensor) for v in state.values()):
        problem = "is a dict, but not every value is a tensor"
    elif mismatch := _mismatch(state, resnet18_shapes()):
        problem = f"is not ImageNet ResNet-18 weights: {mismatch}"
    else:
        return
    raise StageError(f"{source}: the file {problem}; check weights.url in params.yaml")


@functools.cache
def resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of torchvision's resnet18() (1000 classes) state dict, with its shape."""
    from torchvision.models import resnet18  # here: only the weights stage checks shapes

    with torch.device("meta"):  # shapes without allocating or initialising 11.7M params
        model = resnet18()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _mismatch(state: dict, expected: dict[str, tuple[int, ...]]) -> str:
    """What differs between a state dict and the expected key shapes, in words; '' if nothing."""
    missing = [k for k in expected if k not in state and not k.endswith(OPTIONAL_SUFFIX)]
    extra = [k for k in state if k not in expected]
    misshapen = [f"{k}: expected {_shape(expected[k])}, got {_shape(tuple(v.shape))}"
                 for k, v in state.items() if k in expected and tuple(v.shape) != expected[k]]
    parts = [_some(missing, "key missing", "keys missing"),
             _some(misshapen, "misshapen", "misshapen", sep="; "),  # each item holds a comma
             _some(extra, "unexpected", "unexpected")]
    return ", ".join(p for p in parts if p)


def _some(items: list[str], one: str, many: str, sep: str = ", ") -> str:
    """'2 keys missing (a, b)', naming at most NAMED of them; '' for none."""
    if not items:
        return ""
    named = sep.join(items[:NAMED]) + (f"{sep}and {len(items) - NAMED} more" if len(items) > NAMED else "")
    return f"{len(items)} {one if len(items) == 1 else many} ({named})"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if shape else "a scalar"


def load_weights(path: Path, source: str) -> dict[str, torch.Tensor]:
    """Pretrained weights: loaded without running pickled code, and checked to be ImageNet
    ResNet-18's, key by key and shape by shape."""
    state = load_state(path, source, "check weights.url in params.yaml")
    check_state_dict(state, source)
    return state


def save_checkpoint(dest: Path, state_dict: dict, run: str, params: dict, summary: dict) -> None:
    """A trained model's state dict (CPU, contiguous) with the params it was trained with."""
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(dest) as tmp, tmp.open("wb") as f:
        # A Python file, not a path: a failed write then surfaces as the OSError with its
        # errno (disk full, file-size limit), which atomic_path turns into one line.
        torch.save({"run": run, "state_dict": state, "params": params, "summary": summary}, f)
