"""Photo-sized synthetic stand-in for the hotdog folder, for machines without the real one.

Writes OUT/{train,test}/{hotdog,not-hotdog}/N.png (about 500x375, like the real set), or
N.jpg with --format jpg, as the real set's files are (benchmarks/e2e.py times decoding them).
Run: hotdog make-data OUT [--train 500] [--test 200] [--format png|jpg]   (images per class;
OUT must be new or empty)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from hotdog.core.errors import StageError
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


def count(least: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `least`."""
    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, not {n}")
        return n
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, each count checked."""
    parser = argparse.ArgumentParser(prog="hotdog make-data", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("out", type=Path, help="a new or empty folder to write the data set in")
    parser.add_argument("--train", type=count(1), default=500, help="training images per class")
    # 0 is allowed for a folder of photos to score (benchmarks/predict.py makes one this way).
    parser.add_argument("--test", type=count(0), default=200,
                        help="test images per class; 0 writes no test/: photos to predict on, not a data set "
                             "the pipeline takes")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="the images' format")
    return parser.parse_args(argv)


def check_new(out: Path) -> None:
    """Refuse a folder that holds anything: adding to it would mix two data sets, and the
    count said would not be what the folder holds."""
    if out.is_dir() and any(out.iterdir()):
        raise StageError(f"{out} already holds files; pick a new or empty folder, or remove it first")
    if out.exists() and not out.is_dir():
        raise StageError(f"{out} is a file, not a folder; pick a new or empty folder")


def write_set(out: Path, train: int, test: int, fmt: str) -> int:
    """Write the images on every core; how many."""
    jobs = []
    for s, (split, n) in enumerate(zip(SPLITS, (train, test))):
        for label, name in enumerate(CLASSES if n else ()):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            jobs += [(folder / f"{i}.{fmt}", s, label, i) for i in range(n)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write_photo, *zip(*jobs), chunksize=32))
    return len(jobs)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        check_new(args.out)
        written = write_set(args.out, args.train, args.test, args.format)
    except StageError as err:
        sys.exit(f"error: make-data: {err}")
    except OSError as err:  # a path through a file, no permission, a full disk
        sys.exit(f"error: make-data: cannot write {err.filename or args.out} ({err.strerror or err}); "
                 f"pick a folder you can write to, with room for the images")
    print(f"wrote {written} images under {args.out}")


if __name__ == "__main__":
    main()
