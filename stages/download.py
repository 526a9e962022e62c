"""DVC stage `download`: fetch the data set's archive, a zip or a tar (params `data`), and
verify its SHA-1, or pack the local folder data.url names into a zip (hotdog.data.source);
then extract its images (hotdog.data.archive), unless they would take more than
runtime.max_unpacked_gib or the free space.

Writes paths.zip (the archive as fetched, or the packed folder) and paths.images:
{train,test}/<class>/ image files, or <class>/ image files when the data set is class
folders alone, at any depth inside the class folder (hotdog.data.layout).
Run from the repo root: python -m stages.download
"""

from __future__ import annotations

from pathlib import Path

from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.data.archive import extract
from hotdog.data.fetch import fetch
from hotdog.data.source import describe, folder_of, pack
from hotdog.runner.stage import run_main

PARAMS = ("data.url", "data.sha1", "data.classes")


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.zip, paths.images]


def main() -> None:
    p = load_params(*PARAMS)
    limit = int(p.runtime.max_unpacked_gib * 2**30)
    folder = folder_of(p.data.url)
    if folder is not None:
        pack(folder, p.paths.zip, limit, p.data.classes)
    else:
        fetch(p.data.url, p.paths.zip, "sha1", describe(p.data.url, p.data.sha1)["sha1"], section="data")
    try:
        extract(p.paths.zip, p.paths.images, limit, p.data.classes)
    except BaseException:
        # All or nothing: an archive that cannot be unpacked is no output either, and a
        # re-run fetches it again anyway.
        p.paths.zip.unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    run_main("download", main)
