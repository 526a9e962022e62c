"""DVC stage `download`: fetch hotdog.zip (params `data`), verify its SHA-1 and extract it,
unless it says it unpacks to more than runtime.max_unpacked_gib or the free space.

Writes paths.zip and paths.images ({train,test}/{hotdog,not-hotdog}/ image files).
Run from the repo root: python -m stages.download
"""

from __future__ import annotations

from pathlib import Path

from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.data.archive import extract
from hotdog.data.fetch import fetch
from hotdog.runner.stage import run_main

PARAMS = ("data",)


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.zip, paths.images]


def main() -> None:
    p = load_params(*PARAMS)
    fetch(p.data.url, p.paths.zip, "sha1", p.data.sha1, section="data")
    try:
        extract(p.paths.zip, p.paths.images, max_bytes=int(p.runtime.max_unpacked_gib * 2**30))
    except BaseException:
        # All or nothing: an archive that cannot be unpacked is no output either, and a
        # re-run fetches it again anyway.
        p.paths.zip.unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    run_main("download", main)
