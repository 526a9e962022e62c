"""The manifest: one checked row per image of each split, its classes, and the rejects.

Every image is hashed and its pixel data read through once (see `check_pixels`); one that
fails is a reject, with its reason, instead of a row. The classes come from the class
folders (hotdog.data.layout); a data set of class folders alone is split here, by each
image's SHA-1 (hotdog.data.split).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple, Sequence

import pyarrow as pa
from PIL import Image

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path
from hotdog.core.names import SPLITS
from hotdog.core.schema import MANIFEST, with_classes
from hotdog.data.layout import FOLDERS, SPLIT, kind_of, select
from hotdog.data.photo import aspect_problem
from hotdog.data.split import check_covered, split_of

SHOWN = 3  # the rejects an error names; rejects.csv lists every one when the stage passes


class Scan(NamedTuple):
    """A whole scan: each split's manifest table (recording the classes) and rejects, and
    the counts for metrics/manifest.json."""

    classes: tuple[str, ...]
    tables: dict[str, pa.Table]
    rejects: dict[str, list[dict]]
    summary: dict


class Item(NamedTuple):
    """One file to probe: its path relative to the images folder, its label and class, and
    its split (empty until a FOLDERS data set is split by content)."""

    rel: str
    label: int
    class_name: str
    split: str


class Probe(NamedTuple):
    """What one file turned out to be: a manifest row, or a reason it was rejected; its
    SHA-1 either way."""

    row: dict | None
    reason: str | None
    sha1: str


def subfolders(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir()) if folder.is_dir() else []


def layout_of(root: Path) -> tuple[str, list[str]]:
    """(SPLIT or FOLDERS, the class folders) of the download stage's images folder."""
    if not root.is_dir():
        raise StageError(f"{root} is missing; re-run `dvc repro download`")
    kind = kind_of(set(subfolders(root)))
    return kind, subfolders(root / SPLITS[0]) if kind == SPLIT else subfolders(root)


def list_images(root: Path, classes: Sequence[str], split: str | None) -> list[Item]:
    """Every file under root/[split/]<class>/, at any depth (hotdog.data.layout), classes in
    label order, each class's files sorted by their path in it."""
    found = []
    for label, name in enumerate(classes):
        rel_folder = f"{split}/{name}" if split else name
        folder = root / rel_folder
        if not folder.is_dir():
            raise StageError(f"{folder} is missing; re-run `dvc repro download`")
        found.extend(Item(f"{rel_folder}/{rel}", label, name, split or "") for rel in files_in(folder))
    return found


def files_in(folder: Path) -> list[str]:
    """The relative POSIX paths of the files under `folder`, at any depth, sorted."""
    found = []
    for dirpath, _, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder).as_posix()
        found.extend(name if rel == "." else f"{rel}/{name}" for name in filenames)
    return sorted(found)


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


def probe_image(root: Path, item: Item) -> Probe:
    """Hash and check one file; never raises for a bad image."""
    data = (root / item.rel).read_bytes()
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, mode, (width, height) = img.format or "", img.mode, img.size  # before draft()
            if problem := aspect_problem(width, height):
                return Probe(None, problem, sha1)
            check_pixels(img)
    except Image.UnidentifiedImageError:
        # Pillow's own message names the BytesIO by its address, which differs every run.
        return Probe(None, "not an image Pillow can read (UnidentifiedImageError)", sha1)
    except Exception as err:  # PIL raises many types for bad input; all mean "reject"
        reason = re.sub(r" at 0x[0-9a-fA-F]+", "", f"{type(err).__name__}: {err}".replace("\n", " "))
        return Probe(None, reason, sha1)
    row = dict(path=item.rel, label=item.label, class_name=item.class_name, split=item.split,
               size_bytes=len(data), sha1=sha1, width=width, height=height, format=fmt, mode=mode)
    return Probe(row, None, sha1)


def probe_all(root: Path, items: list[Item], workers: int) -> list[Probe]:
    """probe_image over all items, in order, using `workers` processes."""
    if workers <= 1 or len(items) < 64:
        return [probe_image(root, item) for item in items]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(probe_image, [root] * len(items), items, chunksize=32))


def check_split(split: str, table: pa.Table, rejects: list[dict], classes: Sequence[str],
                max_reject_fraction: float) -> None:
    """Fail when too much of a split is bad, or a class is left with no image."""
    bad = [r for r in rejects if not r.get("duplicate")]
    total = table.num_rows + len(bad)
    if total and len(bad) / total > max_reject_fraction:
        shown = "; ".join(f"{r['path']} ({r['reason']})" for r in bad[:SHOWN])
        more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise StageError(
            f"{len(bad)} of {total} images in split '{split}' cannot be used, more than "
            f"manifest.max_reject_fraction={max_reject_fraction}: {shown}{more}; replace or remove them, or raise "
            "manifest.max_reject_fraction in params.yaml"
        )
    counts = set(table.column("label").to_pylist())
    for label, name in enumerate(classes):
        if label not in counts:
            # rejects.csv is written only when the stage passes: the error names them itself.
            theirs = [f"{r['path']} ({r['reason']})" for r in rejects if r.get("class_name") == name]
            if not theirs:
                raise StageError(f"split '{split}' has no '{name}' image; add some, or leave the class out of "
                                 "data.classes in params.yaml")
            more = f"; and {len(theirs) - SHOWN} more" if len(theirs) > SHOWN else ""
            raise StageError(f"split '{split}' has no usable '{name}' image: all {len(theirs)} could not be used: "
                             f"{'; '.join(theirs[:SHOWN])}{more}; replace them")


def summarize(classes: Sequence[str], kind: str, test_fraction: float, tables: dict[str, pa.Table],
              rejects: dict[str, list[dict]], copies: int) -> dict:
    """Counts per split and class, for metrics/manifest.json."""
    summary: dict = {"classes": list(classes), "layout": kind,
                     "test_fraction": test_fraction if kind == FOLDERS else None,
                     # Extra copies of an image (the same SHA-1); those in train of an image in
                     # test are left out of train, so no test image is trained on.
                     "duplicates": {"copies": copies,
                                    "left_out_of_train": sum(1 for r in rejects["train"] if r.get("duplicate"))}}
    for split, table in tables.items():
        labels = table.column("label").to_pylist()
        summary[split] = {"images": table.num_rows, "rejected": sum(1 for r in rejects[split] if not r.get("duplicate")),
                          "per_class": {name: labels.count(i) for i, name in enumerate(classes)}}
    return summary


def write_rejects(dest: Path, rejects: dict[str, list[dict]]) -> None:
    """rejects.csv: split, path, reason; header only when nothing was rejected."""
    with atomic_path(dest) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["split", "path", "reason"], lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        for split in SPLITS:
            writer.writerows({"split": split, **r} for r in rejects[split])


def scan(root: Path, wanted: Sequence[str] | None, test_fraction: float, max_reject_fraction: float,
         workers: int) -> Scan:
    """Probe every image under `root`, split a FOLDERS data set, and check each split; writes
    nothing, so a split that fails its check leaves no output behind."""
    kind, found = layout_of(root)
    classes = select(found, wanted, str(root))
    if kind == SPLIT:
        items = [item for split in SPLITS for item in list_images(root, classes, split)]
    else:
        items = list_images(root, classes, None)
    probes = probe_all(root, items, workers)
    if kind == FOLDERS:
        items = [item._replace(split=split_of(probe.sha1, test_fraction)) for item, probe in zip(items, probes)]
        probes = [p._replace(row={**p.row, "split": item.split}) if p.row else p for item, p in zip(items, probes)]
    in_test = {p.sha1: item.rel for item, p in zip(items, probes) if item.split == "test" and p.row}
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    rejects: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for item, probe in zip(items, probes):
        if probe.row is None:  # class_name is for the errors; rejects.csv has split, path, reason
            rejects[item.split].append({"path": item.rel, "reason": probe.reason, "class_name": item.class_name})
        elif item.split == "train" and probe.sha1 in in_test:
            rejects["train"].append({"path": item.rel, "duplicate": True, "class_name": item.class_name,
                                     "reason": f"identical to {in_test[probe.sha1]} (same SHA-1), which is in test"})
        else:
            rows[item.split].append(probe.row)
    tables = {split: with_classes(pa.Table.from_pylist(rows[split], schema=MANIFEST), classes) for split in SPLITS}
    if kind == FOLDERS:
        check_covered({split: {c: sum(r["class_name"] == c for r in rows[split]) for c in classes}
                       for split in SPLITS}, test_fraction,
                      {c: [f"{r['path']} ({r['reason']})" for s in SPLITS for r in rejects[s]
                           if r.get("class_name") == c] for c in classes})
    for split in SPLITS:
        check_split(split, tables[split], rejects[split], classes, max_reject_fraction)
    sha1s = [p.sha1 for p in probes if p.row]
    return Scan(classes, tables, rejects, summarize(classes, kind, test_fraction, tables, rejects,
                                                   len(sha1s) - len(set(sha1s))))
