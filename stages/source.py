"""DVC stage `source`: record what data.url holds now in paths.source, the download
stage's dep (hotdog.data.source). DVC runs it every time (always_changed), since neither a
URL nor a folder outside the repo is something DVC tracks; it takes a moment, and when the
record is unchanged nothing after it runs. Run from the repo root: python -m stages.source
"""

from __future__ import annotations

from pathlib import Path

from hotdog.core.files import write_json
from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.data.source import describe, recorded_folder
from hotdog.runner.stage import run_main

PARAMS = ("data.url", "data.sha1")


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.source]


def main() -> None:
    p = load_params(*PARAMS)
    # The record is persist: DVC leaves the last one in place for this run to read.
    kept = recorded_folder(p.data.url, p.data.sha1, p.paths.source)
    if kept is not None:
        print(f"source: {p.data.url} is not on this machine; kept the record of its {kept['files']:,} images, so "
              "the stages after this one need not run (download cannot run here without the folder)", flush=True)
        return
    record = describe(p.data.url, p.data.sha1)
    write_json(p.paths.source, record)
    what = f"a folder of {record['files']:,} images" if record["kind"] == "folder" else "an archive (a zip or a tar)"
    print(f"source: {p.data.url} is {what}", flush=True)


if __name__ == "__main__":
    run_main("source", main)
