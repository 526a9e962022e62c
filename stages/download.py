"""DVC stage `download`: fetch hotdog.zip (params `data`), verify its SHA-1 and extract it.

Writes paths.zip and paths.images ({train,test}/{hotdog,not-hotdog}/ image files).
Run from the repo root: python -m stages.download
"""

from __future__ import annotations

from pathlib import Path

from hotdog.archive import extract
from hotdog.errors import run_main
from hotdog.fetch import fetch
from hotdog.params import Paths, load_params

PARAMS = ("data",)


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.zip, paths.images]


def main() -> None:
    p = load_params(*PARAMS)
    fetch(p.data.url, p.paths.zip, "sha1", p.data.sha1, section="data")
    extract(p.paths.zip, p.paths.images)


if __name__ == "__main__":
    run_main("download", main)
