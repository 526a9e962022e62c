"""Weights stage: reads params `weights` and `paths`; writes paths.weights, the ImageNet
ResNet-18 state dict, SHA-256 verified and checked to load safely.
Run from the repo root: python -m stages.weights
"""

from __future__ import annotations

from pathlib import Path

import torch

from stages.checkpoint import load_state
from stages.errors import StageError, run_main
from stages.fetch import fetch
from stages.params import Paths, load_params

SECTIONS = ("weights",)
REQUIRED_KEYS = ("conv1.weight", "fc.weight")  # the first and last layers of a ResNet


def outputs(paths: Paths) -> list[Path]:
    """The files this stage writes."""
    return [paths.weights]


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
    """Load a state dict without running pickled code, and check it is a ResNet's."""
    state = load_state(path, source, "check weights.url in params.yaml")
    check_state_dict(state, source)
    return state


def main() -> None:
    """Fetch the pretrained weights, verify their digest, and check they load."""
    params = load_params(*SECTIONS)
    url = params.weights.url
    fetch(url, params.paths.weights, "sha256", params.weights.sha256, section="weights",
          check=lambda tmp: load_weights(tmp, url))


if __name__ == "__main__":
    run_main("weights", main)
