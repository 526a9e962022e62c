"""Resumable training: a killed training stage continues from its last finished epoch.

DVC 3 has no checkpoint outputs; its maintainers' advice is to resume in the training code
and let DVC record the stage once it completes. So after each epoch a training stage saves a
`Snapshot` under paths.state, outside DVC's outputs, in a file keyed by a digest of all
that decides the result: the stage's params, the bytes of the files it reads and the
source of the code it runs. A state from other params, data or code is never used. The
epoch plan is a pure function of (seed, epoch) (hotdog.data.augment), so the model, the optimizer,
torch's generator and the records so far are all that a resumed run needs to end with the
same outputs as one never stopped (tests/test_resume.py checks it bit for bit on the CPU).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Iterable, NamedTuple

import torch

from hotdog.core.files import atomic_path, file_digest

# Bump when the snapshot's layout changes, so an old state is never read as a new one.
FORMAT = 1


class Snapshot(NamedTuple):
    """A training run after `epoch` finished epochs."""

    epoch: int
    model: dict  # state dict
    optimizer: dict  # state dict
    records: list[dict]  # metrics/<run>_epochs.json so far
    stats: list[list[float]]  # hotdog.training.train.EpochStats of each epoch, as lists
    rng: torch.Tensor  # torch's CPU generator state


def code_files() -> list[Path]:
    """The source of every project module this process has loaded (the hotdog library and
    the stage entry points): a change to any of them makes DVC re-run the stage, so it
    must also make a saved state unusable."""
    files = set()
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if origin and name.split(".")[0] in ("hotdog", "stages"):
            files.add(Path(origin))
    return sorted(files)


def state_key(run: str, params: dict, inputs: Iterable[Path]) -> str:
    """The digest a state is filed under: run, params and the content of every input."""
    h = hashlib.sha256(json.dumps({"format": FORMAT, "run": run, "params": params}, sort_keys=True).encode())
    for path in sorted(set(inputs)):
        h.update(f"\n{path.name}:{file_digest(path)}".encode())
    return h.hexdigest()


class ResumeStore:
    """The one resumable state of a training stage for one key, under `folder`."""

    def __init__(self, folder: Path, run: str, key: str):
        self.folder, self.run, self.key = Path(folder), run, key
        self.path = self.folder / f"{run}-{key[:16]}.pt"

    def load(self, quiet: bool = False) -> Snapshot | None:
        """The saved snapshot for this key, or None. States of this run under other keys are
        removed: they can never be used again. `quiet`: say nothing (all but one of
        several training processes)."""
        stale = [p for p in self.folder.glob(f"{self.run}-*.pt") if p != self.path]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale and not quiet:
            print(f"{self.run}: removed {len(stale)} resumable state(s) saved with other params, "
                  "inputs or code", flush=True)
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            if saved["format"] != FORMAT or saved["key"] != self.key:
                raise ValueError("saved under another key")
            return Snapshot(**saved["snapshot"])
        except Exception as err:  # a state is a cache: one that will not load is dropped
            if quiet:
                return None
            print(f"{self.run}: ignoring the unreadable resumable state {self.path} "
                  f"({type(err).__name__}); starting from epoch 1", flush=True)
            self.clear()
            return None

    def save(self, snapshot: Snapshot) -> None:
        """Write the snapshot atomically: a kill while saving leaves the previous one."""
        with atomic_path(self.path) as tmp, tmp.open("wb") as f:  # a file: see save_checkpoint
            torch.save({"format": FORMAT, "key": self.key, "snapshot": snapshot._asdict()}, f)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
