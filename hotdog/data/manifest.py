"""The manifest: one checked row per image of each split, and the rejects.

Every image is hashed and its pixel data read through once (see `check_pixels`); one that
fails is a reject, with its reason, instead of a row.
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

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path
from hotdog.core.names import CLASSES, SPLITS
from hotdog.core.schema import MANIFEST


class Scan(NamedTuple):
    """A whole scan: each split's manifest table and rejects, and their counts."""

    tables: dict[str, pa.Table]
    rejects: dict[str, list[dict]]
    summary: dict


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


def check_split(split: str, table: pa.Table, rejects: list[dict], max_reject_fraction: float) -> None:
    """Fail when too much of a split is bad, or a class is left with no image."""
    total = table.num_rows + len(rejects)
    if total and len(rejects) / total > max_reject_fraction:
        raise StageError(
            f"{len(rejects)} of {total} images in split '{split}' are truncated or corrupt "
            f"(more than manifest.max_reject_fraction={max_reject_fraction}); "
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


def scan(root: Path, max_reject_fraction: float, workers: int) -> Scan:
    """Probe every image of both splits under `root` and check each split; writes nothing,
    so a split that fails its check leaves no output behind."""
    tables, rejects = {}, {}
    for split in SPLITS:
        items = list_images(root, split)
        tables[split], rejects[split] = split_table(items, probe_all(root, items, workers))
        check_split(split, tables[split], rejects[split], max_reject_fraction)
    return Scan(tables, rejects, summarize(tables, rejects))
