"""DVC stage `manifest`: scan paths.images into data/manifest/{train,test}.parquet (params
`manifest`, and data.classes and data.test_fraction, which pick the classes and split class
folders alone), listing every image that fails its check in rejects.csv with its reason.
The tables record the classes. Writes metrics/manifest.json (classes, counts, duplicates).
Run from the repo root: python -m stages.manifest
"""

from __future__ import annotations

import os
from pathlib import Path

from hotdog.core.files import write_json
from hotdog.core.names import SPLITS
from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.core.schema import MANIFEST, write_table
from hotdog.data.manifest import scan, write_rejects
from hotdog.runner.stage import run_main

PARAMS = ("manifest", "data.classes", "data.test_fraction")


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.manifest_file(s) for s in SPLITS] + [paths.rejects, paths.manifest_summary]


def main() -> None:
    p = load_params(*PARAMS)
    result = scan(p.paths.images, p.data.classes, p.data.test_fraction, p.manifest.max_reject_fraction,
                  workers=os.cpu_count() or 1)
    for split in SPLITS:
        write_table(result.tables[split], p.paths.manifest_file(split), MANIFEST)
    write_rejects(p.paths.rejects, result.rejects)
    write_json(p.paths.manifest_summary, result.summary)
    print(f"{len(result.classes)} classes ({result.summary['layout']} layout): {', '.join(result.classes)}",
          flush=True)
    for split in SPLITS:
        counts = result.summary[split]
        per_class = ", ".join(f"{n}: {k}" for n, k in counts["per_class"].items())
        print(f"{split}: {counts['images']} images ({per_class}), {counts['rejected']} rejected "
              f"(see {p.paths.rejects})", flush=True)
    if result.summary["duplicates"]["left_out_of_train"]:
        print(f"{result.summary['duplicates']['left_out_of_train']} train image(s) identical to a test image "
              f"left out of train (see {p.paths.rejects})", flush=True)


if __name__ == "__main__":
    run_main("manifest", main)
