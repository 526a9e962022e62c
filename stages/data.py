"""Images for training and evaluation, read through the manifest (never by globbing).

Augmentation follows the seed (RandomResizedCrop, horizontal flip, ImageNet normalize),
but each image draws from its own generator seeded by (seed, epoch, index), so results
do not depend on the number of DataLoader workers or on the order batches arrive in.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2 import functional as F

from stages.params import TrainParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's RandomResizedCrop defaults, which the seed uses.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def load_rgb(path: Path) -> Image.Image:
    """Decode an image as RGB (grey, palette, RGBA and CMYK are converted, not rejected)."""
    with Image.open(path) as img:
        return img.convert("RGB")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A well-mixed 63-bit seed for one image in one epoch."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def sample_crop(height: int, width: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params drawn from `g`: (top, left, crop height, crop width).

    Same algorithm as torchvision's (ten tries at a random area and log-uniform aspect
    ratio, then a centre crop), which draws from the global RNG instead.
    """
    area = height * width
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*CROP_SCALE, generator=g).item()
        aspect = math.exp(torch.empty(1).uniform_(log_lo, log_hi, generator=g).item())
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    ratio = width / height
    if ratio < CROP_RATIO[0]:
        w, h = width, int(round(width / CROP_RATIO[0]))
    elif ratio > CROP_RATIO[1]:
        h, w = height, int(round(height * CROP_RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def normalize(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float CHW tensor with ImageNet normalisation (ToTensor + Normalize)."""
    x = F.pil_to_tensor(img).float().div(255)  # as ToTensor does, to the last bit
    return F.normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def train_view(img: Image.Image, size: int, g: torch.Generator) -> torch.Tensor:
    """The seed's train transform, with every random draw taken from `g`."""
    top, left, h, w = sample_crop(img.height, img.width, g)
    img = F.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    if torch.rand(1, generator=g).item() < 0.5:
        img = F.horizontal_flip(img)
    return normalize(img)


def test_view(img: Image.Image, size: int, resize: int) -> torch.Tensor:
    """The seed's test transform: squash to resize x resize, then centre-crop size."""
    img = F.resize(img, [resize, resize], antialias=True)
    return normalize(F.center_crop(img, [size, size]))


class ManifestDataset(Dataset):
    """(image tensor, label) for each manifest row; with a `seed` it augments, else test view."""

    def __init__(self, table: pa.Table, root: Path, params: TrainParams, seed: int | None = None):
        self.paths = [root / p for p in table.column("path").to_pylist()]
        self.labels = table.column("label").to_pylist()
        self.size, self.resize = params.image_size, params.test_resize
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentation draws the next iteration uses."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = load_rgb(self.paths[index])
        if self.seed is not None:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
            return train_view(img, self.size, g), self.labels[index]
        return test_view(img, self.size, self.resize), self.labels[index]


def make_loader(dataset: ManifestDataset, params: TrainParams, shuffle_seed: int | None = None) -> DataLoader:
    """A DataLoader in manifest order, or shuffled by `shuffle_seed` (a new order each epoch)."""
    shuffle = shuffle_seed is not None
    return DataLoader(
        dataset,
        batch_size=params.batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(shuffle_seed) if shuffle else None,
        num_workers=params.num_workers,
        # Workers are re-created each epoch so they see set_epoch(); that costs a
        # process start per epoch, which is small next to an epoch of decoding.
        persistent_workers=False,
    )
