"""Progress on long work, as tqdm's users expect it: a bar on a terminal (`dvc repro` passes
stderr through), else a plain line at each tenth, which is what a log, CI or the Prefect UI
shows ("finetune epoch 1/5: batch 4/16", "decode train: image 1400/2000")."""

from __future__ import annotations

import sys
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def tracked(items: Iterable[T], total: int, desc: str | None, unit: str = "batch",
            on_tenth: Callable[[float], None] | None = None) -> Iterator[T]:
    """`items`, `total` of them, with progress told at each tenth done (once the caller has
    used its items), the last at the whole. `on_tenth` gets the share done at each tenth,
    wherever the output goes. No `desc`: no progress at all (for the training processes
    other than the main one)."""
    if desc is None:
        yield from items
        return
    bar = sys.stderr.isatty()
    told = 0  # tenths told so far: at most ten lines, however few or many the items
    for i, item in enumerate(tqdm(items, total=total, desc=desc, unit=unit, leave=False) if bar else items, 1):
        yield item
        if 10 * i // total > told:
            told = 10 * i // total
            if not bar:
                print(f"{desc}: {unit} {i}/{total}", flush=True)
            if on_tenth is not None:
                on_tenth(i / total)
