"""The ImageNet ResNet-18 weights file: the keys and shapes it must hold, and the weights
stage's check of them. A plain state dict passes without torch (hotdog.model.torchfile), which
takes seconds to import; any other file goes to torch.load(weights_only=True)."""

from __future__ import annotations

import functools
from pathlib import Path

from hotdog.core.errors import StageError
from hotdog.model import torchfile

NAMED = 3  # keys named per kind of problem; the rest are counted
# BatchNorm's step counter: files saved before torch 0.4.1, torchvision's ImageNet weights
# among them, lack it, and load_state_dict fills it in (for unversioned or version-1 BN).
OPTIONAL_SUFFIX = ".num_batches_tracked"
FIX = "check weights.url in params.yaml"


def check_weights(path: Path, source: str) -> None:
    """The weights stage's check: ImageNet ResNet-18's keys and shapes, loaded safely.

    A file hotdog.model.torchfile reads as a dict of tensors with exactly those keys and shapes
    passes as it is. Anything else goes to load_weights, so torch decides and says why."""
    shapes = torchfile.tensor_shapes(path)
    if shapes is None or _mismatch(shapes, resnet18_shapes()):
        load_weights(path, source)


def load_weights(path: Path, source: str) -> dict:
    """Pretrained weights: loaded without running pickled code, and checked to be ImageNet
    ResNet-18's, key by key and shape by shape."""
    from hotdog.model.checkpoint import load_state  # here: torch, which a good file never needs

    state = load_state(path, source, FIX)
    check_state_dict(state, source)
    return state


def check_state_dict(state: object, source: str) -> None:
    """Require a dict of tensors with exactly the keys and shapes of ImageNet's ResNet-18."""
    import torch  # here: only a file hotdog.model.torchfile could not vouch for gets this far

    if not isinstance(state, dict):
        problem = f"holds a {type(state).__name__}, not a state dict"
    elif not all(isinstance(v, torch.Tensor) for v in state.values()):
        problem = "is a dict, but not every value is a tensor"
    elif mismatch := _mismatch({k: tuple(v.shape) for k, v in state.items()}, resnet18_shapes()):
        problem = f"is not ImageNet ResNet-18 weights: {mismatch}"
    else:
        return
    raise StageError(f"{source}: the file {problem}; {FIX}")


@functools.cache
def resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of torchvision's resnet18() (1000 classes) state dict with its shape, in its
    order. Written out from the architecture, as torchvision's would take seconds to import;
    tests/test_download.py checks it against torchvision's."""
    shapes = {"conv1.weight": (64, 3, 7, 7), **_batchnorm("bn1", 64)}
    width = 64
    for layer, planes in enumerate((64, 128, 256, 512), 1):
        for block in range(2):  # two BasicBlocks per layer
            name, inputs = f"layer{layer}.{block}", width if block == 0 else planes
            shapes |= {f"{name}.conv1.weight": (planes, inputs, 3, 3), **_batchnorm(f"{name}.bn1", planes),
                       f"{name}.conv2.weight": (planes, planes, 3, 3), **_batchnorm(f"{name}.bn2", planes)}
            if inputs != planes:  # the first block of layers 2 to 4 halves the size: a 1x1 shortcut
                shapes |= {f"{name}.downsample.0.weight": (planes, inputs, 1, 1),
                           **_batchnorm(f"{name}.downsample.1", planes)}
        width = planes
    return shapes | {"fc.weight": (1000, 512), "fc.bias": (1000,)}


def _batchnorm(name: str, channels: int) -> dict[str, tuple[int, ...]]:
    """A BatchNorm2d's state: its parameters, then its buffers."""
    return {f"{name}.{k}": (channels,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{name}{OPTIONAL_SUFFIX}": ()}


def _mismatch(shapes: dict, expected: dict[str, tuple[int, ...]]) -> str:
    """What differs between a state dict's key shapes and the expected ones, in words; '' if nothing."""
    missing = [k for k in expected if k not in shapes and not k.endswith(OPTIONAL_SUFFIX)]
    extra = [k for k in shapes if k not in expected]
    misshapen = [f"{k}: expected {_shape(expected[k])}, got {_shape(shape)}"
                 for k, shape in shapes.items() if k in expected and shape != expected[k]]
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
