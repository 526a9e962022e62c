"""What the two training stages, `finetune` and `scratch`, share: they differ only in their
params section. The work is hotdog.training.stage's."""

from __future__ import annotations

from pathlib import Path

from hotdog.core import events
from hotdog.core.paths import Paths
from hotdog.runner.stage import run_main


def params(run: str) -> tuple[str, ...]:
    """The params a training stage declares in dvc.yaml."""
    return ("seed", "train", run)


def outputs(paths: Paths, run: str) -> list[Path]:
    """What a training stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.checkpoint(run), paths.run_summary(run), paths.run_epochs(run)]


def run_stage(run: str) -> None:
    """A training stage's __main__."""
    run_main(run, lambda: main(run))


def main(run: str) -> None:
    """Train the run and write its outputs (hotdog.training.stage)."""
    # torch and all that uses it are imported here, once the stage has said it started.
    from hotdog.training.stage import train_stage

    events.mark("imported")
    train_stage(run, params(run))
