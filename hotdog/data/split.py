"""The train/test split of a data set given as class folders alone.

Each image's split is drawn from its own content: its SHA-1, read as a number in [0, 1),
against data.test_fraction. So every class is cut at that fraction in expectation (not
exactly, as a stratified sample would be: 24 photos at 0.2 may put 2 or 8 in test), the
same on every machine, unmoved for every other image
when photos are added or removed, and identical files always land together.
"""

from __future__ import annotations

from hotdog.core.errors import StageError

# Hex digits of the SHA-1 read as the draw: 52 bits, all a float64 holds exactly.
DRAW_DIGITS = 13


def draw(sha1: str) -> float:
    """An image's draw in [0, 1), from its SHA-1's first DRAW_DIGITS hex digits."""
    return int(sha1[:DRAW_DIGITS], 16) / 16 ** DRAW_DIGITS


def split_of(sha1: str, test_fraction: float) -> str:
    """'test' for a draw below test_fraction, else 'train'."""
    return "test" if draw(sha1) < test_fraction else "train"


def check_covered(counts: dict[str, dict[str, int]], test_fraction: float,
                  rejected: dict[str, list[str]] | None = None) -> None:
    """Each class must have an image in both splits: {split: {class: usable images}}; one
    line naming the first class the split leaves out of one, and (from `rejected`: {class:
    "path (reason)" of each image that could not be used}) what of it was left out."""
    for cls in sorted(counts["train"].keys() | counts["test"].keys()):  # the same class named on every run
        train, test = counts["train"].get(cls, 0), counts["test"].get(cls, 0)
        if not test or not train:
            side = "test" if not test else "train"
            bad = (rejected or {}).get(cls, [])
            unusable = (f" (and {len(bad)} that could not be used: {'; '.join(bad[:3])}"
                        f"{f'; and {len(bad) - 3} more' if len(bad) > 3 else ''})") if bad else ""
            raise StageError(f"class '{cls}' has {train + test} usable image(s){unusable}, and data.test_fraction="
                             f"{test_fraction} leaves none of them in {side}; add other images of it (identical files "
                             f"always land together){', or replace those' if bad else ''}, or "
                             f"{'raise' if side == 'test' else 'lower'} data.test_fraction in params.yaml")
