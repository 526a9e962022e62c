"""Photo-sized synthetic stand-in for the hotdog folder, for machines without the real one.

Writes OUT/{train,test}/{hotdog,not-hotdog}/N.png (about 500x375, like the real set), or
N.jpg with --format jpg, as the real set's files are (benchmarks/e2e.py times decoding them).
Run: hotdog make-data OUT [--train 500] [--test 200] [--format png|jpg]   (images per class)
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from hotdog.core.names import CLASSES, SPLITS


def photo(label: int, rng: np.random.Generator) -> Image.Image:
    """A smooth random image with a class cue: a warm blob for hotdogs, a cool one otherwise."""
    w, h = int(rng.integers(380, 520)), int(rng.integers(300, 420))
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.15, 0.3) * min(w, h)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
    colour = np.array([220, 120, 40] if label == 0 else [40, 120, 220], dtype=np.float32)
    return Image.fromarray(np.clip(img * (1 - 0.6 * blob) + colour * 0.6 * blob, 0, 255).astype(np.uint8))


def write_photo(dest: Path, split: int, label: int, index: int) -> None:
    """One image, seeded by its place in the set: the same files whatever the process count.
    The format follows dest's suffix (JPEG at PIL's default quality, 75)."""
    photo(label, np.random.default_rng([split, label, index])).save(dest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hotdog make-data", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=500)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    args = parser.parse_args(argv)
    jobs = []
    for s, (split, n) in enumerate(zip(SPLITS, (args.train, args.test))):
        for label, name in enumerate(CLASSES):
            folder = args.out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            jobs += [(folder / f"{i}.{args.format}", s, label, i) for i in range(n)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write_photo, *zip(*jobs), chunksize=32))
    print(f"wrote {2 * (args.train + args.test)} images under {args.out}")


if __name__ == "__main__":
    main()
