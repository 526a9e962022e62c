"""Small synthetic stand-ins for hotdog.zip and the ImageNet weights, made offline."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

CLASSES = ("hotdog", "not-hotdog")
SIZES = [(40, 30), (64, 48), (30, 50), (96, 64), (48, 48)]
# (PIL mode, format) cycled over the images: the real set is PNG, but users' data may
# not be, and every mode here must load as RGB.
KINDS = [("RGB", "PNG"), ("RGB", "JPEG"), ("L", "PNG"), ("CMYK", "JPEG"), ("P", "PNG"),
         ("RGBA", "PNG"), ("RGB", "PNG"), ("RGB", "JPEG")]


def image_bytes(label: int, index: int, rng: np.random.Generator) -> tuple[bytes, str]:
    """One encoded image; hotdogs are warm, the rest cool, so a model can learn them."""
    w, h = SIZES[index % len(SIZES)]
    mode, fmt = KINDS[index % len(KINDS)]
    base = np.array([200, 90, 40] if label == 0 else [40, 110, 200], dtype=np.float64)
    pixels = np.clip(base + rng.normal(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    img = img.convert(mode) if mode != "P" else img.quantize(16)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue(), "png" if fmt == "PNG" else "jpg"


def dataset_files(per_split: dict[str, int], corrupt: int = 0, seed: int = 0) -> dict[str, bytes]:
    """{'hotdog/<split>/<class>/<n>.<ext>': bytes}; `corrupt` truncated PNGs per test split too."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, n in per_split.items():
        for label, name in enumerate(CLASSES):
            for i in range(n):
                data, ext = image_bytes(label, i, rng)
                files[f"hotdog/{split}/{name}/{i}.{ext}"] = data
        for i in range(corrupt):  # cut short: the header parses, the pixels do not
            data, _ = image_bytes(1, 0, rng)
            files[f"hotdog/{split}/not-hotdog/{1000 + i}.png"] = data[: len(data) // 2]
    return files


def colour(label: int, n_classes: int) -> np.ndarray:
    """A distinct base colour per class: hues evenly around the wheel."""
    hue = 2 * np.pi * label / n_classes
    return 128 + 90 * np.array([np.cos(hue), np.cos(hue - 2 * np.pi / 3), np.cos(hue + 2 * np.pi / 3)])


def class_files(classes: Sequence[str], per_class: int | dict[str, int], top: str = "photos",
                seed: int = 0, size: tuple[int, int] = (40, 30)) -> dict[str, bytes]:
    """{'<top>/<class>/<n>.png': bytes} for any classes, each a learnable colour; with a dict
    {split: n}, '<top>/<split>/<class>/<n>.png' for each split instead."""
    rng = np.random.default_rng(seed)
    splits = per_class if isinstance(per_class, dict) else {"": per_class}
    files = {}
    for split, n in splits.items():
        for label, name in enumerate(classes):
            for i in range(n):
                pixels = colour(label, len(classes)) + rng.normal(0, 30, size=(size[1], size[0], 3))
                buf = io.BytesIO()
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buf, "PNG")
                folder = f"{top}/{split}/{name}" if split else f"{top}/{name}"
                files[f"{folder}/{i}.png"] = buf.getvalue()
    return files


def write_zip(dest: Path, files: dict[str, bytes]) -> str:
    """Zip `files` like hotdog.zip and return the archive's SHA-1."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w") as zf:
        for name in sorted(files):
            zf.writestr(name, files[name])
    return hashlib.sha1(dest.read_bytes()).hexdigest()


def write_zip_declaring(dest: Path, files: dict[str, bytes], sizes: dict[str, int]) -> str:
    """Zip `files`, with the central directory declaring `sizes` (bytes unpacked) for some of
    them: a zip bomb's claim without its bytes. Returns the archive's SHA-1."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w") as zf:
        for name in sorted(files):
            zf.writestr(name, files[name])
        # close() writes the central directory from these records (with a zip64 extra
        # field past 4 GiB), and zipfile reads sizes from there.
        for info in zf.infolist():
            info.file_size = sizes.get(info.filename, info.file_size)
    return hashlib.sha1(dest.read_bytes()).hexdigest()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write `files` under root and return root/'hotdog' (an extracted data set)."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root / "hotdog"


def write_weights(dest: Path, seed: int = 0) -> str:
    """A random ResNet-18 state dict standing in for ImageNet's; returns its SHA-256."""
    import torch
    from torchvision.models import resnet18

    torch.manual_seed(seed)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(resnet18(weights=None).state_dict(), dest)
    return hashlib.sha256(dest.read_bytes()).hexdigest()
