"""DVC stage `manifest`: scan data/hotdog into data/manifest/{train,test}.parquet.

Every image is hashed and its pixel data read through once (see `check_pixels`); one that
fails goes to rejects.csv instead. Writes metrics/manifest.json (counts). Run: python -m stages.manifest
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
from PIL import Image

from stages.errors import StageError, run_main
from stages.files import atomic_path, write_json
from stages.params import CLASSES, SPLITS, ManifestParams, Paths, load_params
from stages.schema import MANIFEST, write_table

SECTIONS = ("manifest",)


class Probe(NamedTuple):
    """What one file turned out to be: a manifest row, or a reason it was rejected."""

    row: dict | None
    reason: str | None


def list_images(root: Path, split: str) -> list[tuple[str, int]]:
    """(relative POSIX path, label) of every file under root/split/<class>/, sorted."""
    found = []
    for label, name in enumerate(CLASSES):
        folder = root / split / name
        if not folder.is_dir():
            raise StageError(f"{folder} is missing; re-run `dvc repro download`")
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.is_file():
                found.append((f"{split}/{name}/{entry.name}", label))
    return found


def check_pixels(img: Image.Image) -> None:
    """Raise if the image's pixel data is truncated or corrupt, without a full-size decode.

    The decode stage decodes every image anyway, so paying for it here too would double the
    cost (5 ms a photo-sized PNG). A PNG's chunk CRCs cover all its compressed pixel data,
    and verify() checks them. A JPEG decoded in draft mode at 1/8 scale still reads every
    entropy-coded byte, so truncation shows. Other formats are decoded in full.
    """
    if img.format == "PNG":
        img.verify()
        return
    img.draft("RGB", (1, 1))  # a no-op for formats without draft support
    img.load()


def probe_image(root: Path, rel: str, label: int) -> Probe:
    """Hash and check one file; never raises for a bad image."""
    data = (root / rel).read_bytes()
    split, class_name = rel.split("/")[:2]
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, mode, (width, height) = img.format or "", img.mode, img.size  # before draft()
            check_pixels(img)
    except Exception as err:  # PIL raises many types for bad input; all mean "reject"
        reason = f"{type(err).__name__}: {err}".replace("\n", " ")
        return Probe(None, reason)
    row = dict(path=rel, label=label, class_name=class_name, split=split,
               size_bytes=len(data), sha1=hashlib.sha1(data).hexdigest(),
               width=width, height=height, format=fmt, mode=mode)
    return Probe(row, None)


def probe_all(root: Path, items: list[tuple[str, int]], workers: int) -> list[Probe]:
    """probe_image over all items, in order, using `workers` processes."""
    if workers <= 1 or len(items) < 64:
        return [probe_image(root, rel, label) for rel, label in items]
    with ProcessPoolExecutor(workers) as pool:
        rels, labels = zip(*items)
        return list(pool.map(probe_image, [root] * len(items), rels, labels, chunksize=32))


def split_table(items: list[tuple[str, int]], probes: list[Probe]) -> tuple[pa.Table, list[dict]]:
    """The manifest table and the reject rows for one split."""
    rows = [p.row for p in probes if p.row is not None]
    rejects = [{"path": rel, "reason": p.reason} for (rel, _), p in zip(items, probes) if p.row is None]
    table = pa.Table.from_pylist(rows, schema=MANIFEST)
    return table, rejects


def check_split(split: str, table: pa.Table, rejects: list[dict], params: ManifestParams) -> None:
    """Fail when too much of a split is bad, or a class is left with no image."""
    total = table.num_rows + len(rejects)
    if total and len(rejects) / total > params.max_reject_fraction:
        raise StageError(
            f"{len(rejects)} of {total} images in split '{split}' are truncated or corrupt "
            f"(more than manifest.max_reject_fraction={params.max_reject_fraction}); "
            f"first: {rejects[0]['path']} ({rejects[0]['reason']}). Check the data or raise the limit"
        )
    counts = table.column("label").to_pylist()
    for label, name in enumerate(CLASSES):
        if label not in counts:
            raise StageError(f"split '{split}' has no usable '{name}' image; check the data")


def summarize(tables: dict[str, pa.Table], rejects: dict[str, list[dict]]) -> dict:
    """Counts per split and class, for metrics/manifest.json."""
    summary = {}
    for split, table in tables.items():
        labels = table.column("label").to_pylist()
        summary[split] = {"images": table.num_rows, "rejected": len(rejects[split])}
        summary[split].update({name: labels.count(i) for i, name in enumerate(CLASSES)})
    return summary


def write_rejects(dest: Path, rejects: dict[str, list[dict]]) -> None:
    """rejects.csv: split, path, reason; header only when nothing was rejected."""
    with atomic_path(dest) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["split", "path", "reason"], lineterminator="\n")
        writer.writeheader()
        for split in SPLITS:
            writer.writerows({"split": split, **r} for r in rejects[split])


def build_manifest(params: ManifestParams, paths: Paths, workers: int) -> dict:
    """Scan, check and write every output of the stage; returns the summary."""
    tables, rejects = {}, {}
    for split in SPLITS:
        items = list_images(paths.images, split)
        tables[split], rejects[split] = split_table(items, probe_all(paths.images, items, workers))
        check_split(split, tables[split], rejects[split], params)
    # Written only after both splits passed, so a failing check leaves nothing behind.
    for split in SPLITS:
        write_table(tables[split], paths.manifest_file(split), MANIFEST)
    write_rejects(paths.rejects, rejects)
    summary = summarize(tables, rejects)
    write_json(paths.manifest_summary, summary)
    return summary


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.manifest_file(s) for s in SPLITS] + [paths.rejects, paths.manifest_summary]


def main() -> None:
    p = load_params(*SECTIONS)
    summary = build_manifest(p.manifest, p.paths, workers=os.cpu_count() or 1)
    for split, counts in summary.items():
        per_class = ", ".join(f"{n}: {counts[n]}" for n in CLASSES)
        print(f"{split}: {counts['images']} images ({per_class}), {counts['rejected']} rejected "
              f"(see {p.paths.rejects})", flush=True)


if __name__ == "__main__":
    run_main("manifest", main)
