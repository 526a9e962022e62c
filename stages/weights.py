"""DVC stage `weights`: fetch the ImageNet ResNet-18 weights (params `weights`), verify
their SHA-256, and check they load with weights_only=True and hold ResNet-18's keys and
shapes. Writes paths.weights. Run from the repo root: python -m stages.weights
"""

from __future__ import annotations

from pathlib import Path

from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.data.fetch import fetch
from hotdog.model.weights import check_weights
from hotdog.runner.stage import run_main

PARAMS = ("weights",)


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.weights]


def main() -> None:
    p = load_params(*PARAMS)
    url = p.weights.url
    fetch(url, p.paths.weights, "sha256", p.weights.sha256, section="weights",
          check=lambda tmp: check_weights(tmp, url))


if __name__ == "__main__":
    run_main("weights", main)
