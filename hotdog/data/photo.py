"""What an image must be for the models, checked and mended before it is resized: not too
long and thin to resize (the manifest stage rejects one, `hotdog predict` refuses one), and
grey at 8 bits, not 16."""

from __future__ import annotations

import numpy as np
from PIL import Image

# The longest side an image may have against its shorter one. The shorter side is resized to
# the test resize (256 px at 224) and the longer in proportion, so a 1 x 50,000 px strip, a
# few hundred bytes as a PNG, would take 256 x 12,800,000 px: 9 GiB. Wide panoramas are
# about 10:1. The manifest stage rejects a longer image, and `hotdog predict` refuses one.
MAX_ASPECT = 50
# Pillow's modes for grey with more than 8 bits: 16-bit PNGs, TIFFs and PGMs (scanners,
# microscopes, medical and astronomy images), and 32-bit integers.
DEEP_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def aspect_problem(width: int, height: int) -> str | None:
    """Why an image of this size is too long and thin to resize (MAX_ASPECT), else None."""
    ratio = max(width, height) / max(1, min(width, height))
    if ratio <= MAX_ASPECT:
        return None
    return (f"{width} x {height} px: its longer side is {ratio:,.1f} times its shorter, more than the {MAX_ASPECT} "
            "an image may have; crop it to the part to classify")


def eight_bit(img: Image.Image) -> Image.Image:
    """`img`, its grey scaled to 8 bits if it has more. Pillow's convert("RGB") clips a 16-bit
    value at 255 rather than scaling it, which turns nearly every pixel white."""
    if img.mode not in DEEP_GREY:
        return img
    # 16-bit values, also in mode "I", whose files hold them: the top 8 bits.
    return Image.fromarray(np.clip(np.asarray(img).astype(np.int64) >> 8, 0, 255).astype(np.uint8), "L")
