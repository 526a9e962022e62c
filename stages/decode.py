"""DVC stage `decode`: decode every manifest image once into data/decoded/{train,test}.arrow,
uint8 RGB with the shorter side at the test resize for train.image_size (its only param).
Run from the repo root: python -m stages.decode
"""

from __future__ import annotations

import os
from pathlib import Path

from hotdog.core import events
from hotdog.core.names import SPLITS
from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.core.schema import MANIFEST, read_table
from hotdog.data.decode import decode_split
from hotdog.data.sizes import eval_resize
from hotdog.runner.stage import run_main

PARAMS = ("train.image_size",)


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.decoded_file(s) for s in SPLITS]


def main() -> None:
    p = load_params(*PARAMS)
    short_side = eval_resize(p.train.image_size)
    manifests = {split: read_table(p.paths.manifest_file(split), MANIFEST, "manifest") for split in SPLITS}
    total, before = sum(m.num_rows for m in manifests.values()), 0
    for split, manifest in manifests.items():
        def told(share: float, before: int = before, rows: int = manifest.num_rows) -> None:  # the flow's bar
            events.emit(events.Progress(stage="decode", done=(before + share * rows) / total))

        decode_split(p.paths.images, manifest, p.paths.decoded_file(split), short_side, os.cpu_count() or 1,
                     f"decode {split}", told)
        before += manifest.num_rows
        size = p.paths.decoded_file(split).stat().st_size / 2**20
        print(f"{split}: {manifest.num_rows} images decoded, shorter side {short_side} px, {size:.0f} MiB",
              flush=True)


if __name__ == "__main__":
    run_main("decode", main)
