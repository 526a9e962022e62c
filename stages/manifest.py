"""DVC stage `manifest`: scan paths.images into data/manifest/{train,test}.parquet (params
`manifest`), listing every image that fails its check in rejects.csv with its reason.
Writes metrics/manifest.json (counts). Run from the repo root: python -m stages.manifest
"""

from __future__ import annotations

import os
from pathlib import Path

from hotdog.core.files import write_json
from hotdog.core.names import CLASSES, SPLITS
from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.core.schema import MANIFEST, write_table
from hotdog.data.manifest import scan, write_rejects
from hotdog.runner.stage import run_main

PARAMS = ("manifest",)


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.manifest_file(s) for s in SPLITS] + [paths.rejects, paths.manifest_summary]


def main() -> None:
    p = load_params(*PARAMS)
    result = scan(p.paths.images, p.manifest.max_reject_fraction, workers=os.cpu_count() or 1)
    for split in SPLITS:
        write_table(result.tables[split], p.paths.manifest_file(split), MANIFEST)
    write_rejects(p.paths.rejects, result.rejects)
    write_json(p.paths.manifest_summary, result.summary)
    for split, counts in result.summary.items():
        per_class = ", ".join(f"{n}: {counts[n]}" for n in CLASSES)
        print(f"{split}: {counts['images']} images ({per_class}), {counts['rejected']} rejected "
              f"(see {p.paths.rejects})", flush=True)


if __name__ == "__main__":
    run_main("manifest", main)
