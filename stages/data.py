"""Images for training and evaluation, from the decode stage's uint8 files.

Augmentation follows the seed (RandomResizedCrop, horizontal flip, ImageNet normalize) on
uint8 tensors; normalisation runs once per batch, on the training device. Each image
draws from its own generator seeded by (seed, epoch, index), so results do not depend on
the number of DataLoader workers or on the order batches arrive in.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torchvision.transforms.v2 import functional as F

from stages.params import TrainParams

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's RandomResizedCrop defaults, which the seed uses.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


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


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 NCHW (on any device) -> float, ImageNet-normalised: ToTensor + Normalize, batched."""
    mean = torch.tensor(IMAGENET_MEAN, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.device).view(1, 3, 1, 1)
    return (batch.float().div(255) - mean) / std


def train_view(image: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """The seed's RandomResizedCrop + flip on a uint8 CHW tensor, every draw taken from `g`."""
    top, left, h, w = sample_crop(image.shape[1], image.shape[2], g)
    view = F.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    return F.horizontal_flip(view) if torch.rand(1, generator=g).item() < 0.5 else view


def test_view(image: torch.Tensor, size: int, resize: int) -> torch.Tensor:
    """The seed's test transform on a uint8 CHW tensor: squash to resize², centre-crop size."""
    return F.center_crop(F.resize(image, [resize, resize], antialias=True), [size, size])


class DecodedImages(Dataset):
    """(uint8 CHW image, label) per row of a decoded split; with a `seed` it augments."""

    def __init__(self, table: pa.Table, params: TrainParams, seed: int | None = None):
        heights, widths = table.column("height").to_pylist(), table.column("width").to_pylist()
        # Views into the memory-mapped file, chunk by chunk: combine_chunks() would copy
        # the whole split into memory.
        blobs = (blob.as_buffer() for chunk in table.column("pixels").chunks for blob in chunk)
        self.images = [np.frombuffer(blob, dtype=np.uint8).reshape(h, w, 3)
                       for blob, h, w in zip(blobs, heights, widths)]
        self.labels = table.column("label").to_pylist()
        self.size, self.resize = params.image_size, params.test_resize
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentation draws the next iteration uses."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1)  # HWC -> CHW, no copy
        if self.seed is not None:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, index))
            return train_view(image, self.size, g), self.labels[index]
        return test_view(image, self.size, self.resize), self.labels[index]


def test_tensors(dataset: DecodedImages) -> TensorDataset:
    """Every test view, computed once: evaluation then only batches them."""
    views = torch.stack([dataset[i][0] for i in range(len(dataset))]) if len(dataset) else torch.empty(0)
    return TensorDataset(views, torch.tensor(dataset.labels))


def make_loader(dataset: Dataset, params: TrainParams, shuffle_seed: int | None = None) -> DataLoader:
    """A DataLoader in manifest order, or shuffled by `shuffle_seed` (a new order each epoch)."""
    shuffle = shuffle_seed is not None
    return DataLoader(
        dataset,
        batch_size=params.batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(shuffle_seed) if shuffle else None,
        num_workers=params.num_workers if shuffle else 0,  # test views are precomputed
        # Workers are re-created each epoch so they see set_epoch(); that costs a
        # process start per epoch, which is small next to an epoch of training.
        persistent_workers=False,
    )
