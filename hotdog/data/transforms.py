"""The seed's test transform, the one way every trained model sees an image: evaluation,
the test views during training, and predict. Squash to the test resize, centre-crop, and
ImageNet-normalise, on uint8 tensors.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import torch

from hotdog.core.schema import DECODED, classes_of, read_arrow
from hotdog.data.sizes import eval_resize
from hotdog.model.vision import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(batch: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None
              ) -> torch.Tensor:
    """uint8 NCHW (on any device) -> float, ImageNet-normalised: ToTensor + Normalize, batched.
    `mean` and `std` are imagenet_stats() where a caller holds them (an exported model, whose
    trace would otherwise freeze the constants made here to the device it was traced on)."""
    if mean is None or std is None:
        mean, std = _stats_on(batch.device)
    return (batch.float().div(255) - mean) / std


_STATS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _stats_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """imagenet_stats on `device`, made once per device. Made per call, they were a host-to-
    device copy at every training step, and torch makes the host wait for the stream to drain
    before such a copy returns: a stall in every step on CUDA (hotdog cuda-check counts them).
    Made outside inference mode, so a batch that needs autograd can use them later."""
    stats = _STATS.get(device)
    if stats is None:
        with torch.inference_mode(False):
            stats = _STATS[device] = imagenet_stats(device)
    return stats


def imagenet_stats(device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std as (1, 3, 1, 1) float tensors on `device`."""
    return (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))


def eval_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """The seed's test transform on a uint8 CHW tensor: squash to eval_resize², centre-crop
    size. Evaluation and every other use of a trained model go through this one function."""
    resize = eval_resize(size)
    return F.center_crop(F.resize(image, [resize, resize], antialias=True), [size, size])


def pixel_views(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Each row of a binary column as a uint8 NumPy view into its (memory-mapped) buffers.

    Nothing is copied and no page is read until an image is used. combine_chunks() would
    copy the whole split, and iterating the column's scalars reads every page (measured:
    +480 MB resident for the 2,000 train images), which workers would then do again.
    """
    views = []
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        offsets = np.frombuffer(offsets, dtype=np.int64)[chunk.offset:chunk.offset + len(chunk) + 1].tolist()
        data = np.frombuffer(data, dtype=np.uint8)
        views += [data[start:end] for start, end in zip(offsets[:-1], offsets[1:])]
    return views


def as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a read-only array from pixel_views. torch warns that writing to it
    would be undefined; nothing here writes to it (crops and resizes make new tensors)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning)
        return torch.from_numpy(array)


class EvalViews(NamedTuple):
    """Every test view, computed once (uint8 NCHW) with its labels; evaluation only batches them."""

    views: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> EvalViews:
        return EvalViews(self.views.to(device), self.labels.to(device))

    def batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self.labels), batch_size):
            yield self.views[start:start + batch_size], self.labels[start:start + batch_size]


def eval_views(table: pa.Table, size: int) -> EvalViews:
    """The test view of every image in a decoded split, in order."""
    heights, widths = table.column("height").to_pylist(), table.column("width").to_pylist()
    views = torch.empty(table.num_rows, 3, size, size, dtype=torch.uint8)
    # Filled in place: a list to stack would double the peak.
    for i, (pixels, h, w) in enumerate(zip(pixel_views(table.column("pixels")), heights, widths)):
        views[i] = eval_view(as_tensor(pixels.reshape(h, w, 3)).permute(2, 0, 1), size)  # HWC -> CHW, no copy
    return EvalViews(views, torch.tensor(table.column("label").to_pylist(), dtype=torch.int64))


def read_eval_views(path: Path, size: int) -> tuple[EvalViews, list[str], tuple[str, ...]]:
    """Every image's eval view from a decode stage file, the images' paths, and the classes
    the file records (label order). Only the views are kept, so the file's mapping is
    released on return."""
    table = read_arrow(path, DECODED, "decode")
    return eval_views(table, size), table.column("path").to_pylist(), classes_of(table, path, "decode")
