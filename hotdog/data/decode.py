"""Decoding every image once: uint8 RGB, shorter side resized, in manifest order, so
training never decodes a PNG or JPEG again."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from hotdog.core.errors import StageError
from hotdog.core.progress import tracked
from hotdog.core.schema import DECODED, write_arrow
from hotdog.data.photo import aspect_problem, eight_bit
from hotdog.data.upright import upright

BATCH_ROWS = 64


def rgb_pixels(img: Image.Image, short_side: int) -> np.ndarray:
    """HWC uint8 RGB pixels of an open image, turned upright (hotdog.data.upright), its
    shorter side resized: the first half of the test transform (transforms.eval_view is the
    second), shared with hotdog.serving.predict.

    This is torchvision's resize(img, short_side) of a PIL image, the same PIL call, without
    importing torch and torchvision (seconds) into the decode stage and its workers.
    tests/test_data.py checks it gives torchvision's pixels."""
    if problem := aspect_problem(*img.size):
        raise ValueError(problem)  # before a single pixel is decoded
    rgb = eight_bit(upright(img)).convert("RGB")
    size = resized_size(rgb.width, rgb.height, short_side)
    return np.asarray(rgb if size == rgb.size else rgb.resize(size, Image.BILINEAR), dtype=np.uint8)


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side at `short_side`, the longer one scaled and rounded
    down, as torchvision's _compute_resized_output_size has it."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def decode_image(path: Path, short_side: int) -> tuple[int, int, bytes]:
    """(height, width, HWC uint8 RGB bytes) of one image, its shorter side resized."""
    try:
        with Image.open(path) as img:
            pixels = rgb_pixels(img, short_side)
    except Exception as err:  # PIL raises many types for bad input
        # The manifest's cheap check (hotdog/data/manifest.py: check_pixels) lets through a
        # file whose checksums hold but whose pixels do not decode. Rare: say which one.
        raise StageError(f"{path} passed the manifest's check but does not decode "
                         f"({type(err).__name__}: {err}); replace it in the data set and re-run `dvc repro`") from None
    return pixels.shape[0], pixels.shape[1], pixels.tobytes()


def decoded_batches(root: Path, manifest: pa.Table, short_side: int, workers: int, desc: str | None = None,
                    on_tenth: Callable[[float], None] | None = None) -> Iterator[pa.RecordBatch]:
    """The DECODED rows for a manifest, in its order, BATCH_ROWS at a time; progress by
    image under `desc` (hotdog.core.progress.tracked)."""
    paths = manifest.column("path").to_pylist()
    labels = manifest.column("label").to_pylist()
    files = [root / p for p in paths]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        decoded = pool.map(decode_image, files, [short_side] * len(files), chunksize=16)
        rows = []
        # A for loop, so that progress hears of the last image too.
        for i, row in enumerate(tracked(decoded, len(files), desc, "image", on_tenth), 1):
            rows.append(row)
            if len(rows) == BATCH_ROWS or i == len(files):
                start = i - len(rows)
                yield pa.record_batch([
                    pa.array(paths[start:i], pa.string()),
                    pa.array(labels[start:i], pa.int64()),
                    pa.array([h for h, _, _ in rows], pa.int32()),
                    pa.array([w for _, w, _ in rows], pa.int32()),
                    pa.array([b for _, _, b in rows], pa.large_binary()),
                ], schema=DECODED)
                rows = []


def decode_split(root: Path, manifest: pa.Table, dest: Path, short_side: int, workers: int,
                 desc: str | None = None, on_tenth: Callable[[float], None] | None = None) -> None:
    """Decode one split's manifest images under `root` into the Arrow file `dest`, atomically;
    it records the manifest's classes (hotdog.core.schema.with_classes). Progress as
    decoded_batches shows it."""
    schema = DECODED.with_metadata(manifest.schema.metadata or {})
    write_arrow(decoded_batches(root, manifest, short_side, workers, desc, on_tenth), dest, schema)
