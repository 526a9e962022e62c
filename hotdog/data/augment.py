"""Training images, from the decode stage's uint8 files, augmented as the seed does.

Augmentation follows the seed (RandomResizedCrop, horizontal flip) on uint8 tensors;
ImageNet normalisation (hotdog.data.transforms.normalize) runs once per batch, on the
training device.

Each epoch has a plan drawn up front from (seed, epoch): the order of the images, a crop box
and a flip for each. Two paths carry it out, and give the same batches (tests/test_data.py):
- `workers`: DataLoader worker processes crop and resize one image at a time on the CPU
  (torchvision's antialiased resize), so the training steps never wait for them;
- `device`: the whole train split sits on the training device in one uint8 tensor, and
  each batch is cropped and resized there at once (`resized_crops`), with no host work.
The plan does not depend on the number of workers or on the order batches arrive in.
"""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from hotdog.core.schema import DECODED, classes_of, read_arrow
from hotdog.data.transforms import as_tensor, pixel_views
from hotdog.model.vision import functional as F
from hotdog.training.distributed import SINGLE, Shard, share

# torchvision's RandomResizedCrop defaults, which the seed uses.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_TRIES = 10  # as torchvision's get_params


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator for one epoch's plan, well mixed from (seed, epoch)."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def crop_boxes(heights: torch.Tensor, widths: torch.Tensor, u_scale: torch.Tensor, u_ratio: torch.Tensor,
               u_top: torch.Tensor, u_left: torch.Tensor) -> torch.Tensor:
    """RandomResizedCrop.get_params for N images at once: int64 (top, left, height, width) rows.

    The same algorithm as torchvision's (CROP_TRIES tries at a random area and log-uniform
    aspect ratio, the first that fits wins, else a centre crop), in the same float32 and
    float64 steps, fed from uniforms in [0, 1): u_scale and u_ratio (N, CROP_TRIES), u_top
    and u_left (N,). torchvision draws one image at a time from the global RNG instead.
    """
    h_img, w_img = heights.double()[:, None], widths.double()[:, None]
    lo, hi = torch.tensor(CROP_SCALE, dtype=torch.float32)
    scale = lo + u_scale * (hi - lo)
    log_lo, log_hi = torch.log(torch.tensor(CROP_RATIO))
    aspect = torch.exp(log_lo + u_ratio * (log_hi - log_lo)).double()
    target = h_img * w_img * scale.double()
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= w_img) & (h > 0) & (h <= h_img)
    first = fits.int().argmax(1, keepdim=True)  # the first try that fits (argmax takes the first)
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    # No try fits: a centre crop, clamped to the ratio range.
    h_img, w_img = h_img[:, 0], w_img[:, 0]
    in_ratio = w_img / h_img
    fb_w = torch.where(in_ratio > CROP_RATIO[1], torch.round(h_img * CROP_RATIO[1]), w_img)
    fb_h = torch.where(in_ratio < CROP_RATIO[0], torch.round(w_img / CROP_RATIO[0]), h_img)
    found = fits.any(1)
    w, h = torch.where(found, w, fb_w), torch.where(found, h, fb_h)
    top = torch.where(found, torch.floor(u_top * (h_img - h + 1)), torch.floor((h_img - h) / 2))
    left = torch.where(found, torch.floor(u_left * (w_img - w + 1)), torch.floor((w_img - w) / 2))
    return torch.stack([top, left, h, w], 1).long()


class EpochPlan(NamedTuple):
    """What one epoch does: the image order, and each image's crop box and flip."""

    order: torch.Tensor  # (N,) int64, a permutation
    boxes: torch.Tensor  # (N, 4) int64 top, left, height, width; row i is image i's
    flips: torch.Tensor  # (N,) bool


def plan_epoch(seed: int, epoch: int, heights: torch.Tensor, widths: torch.Tensor) -> EpochPlan:
    """The epoch's order, crops and flips, all drawn from epoch_generator(seed, epoch)."""
    g, n = epoch_generator(seed, epoch), len(heights)
    order = torch.randperm(n, generator=g)
    u = torch.rand(n, 2 * CROP_TRIES + 3, generator=g)
    boxes = crop_boxes(heights, widths, u[:, :CROP_TRIES], u[:, CROP_TRIES:2 * CROP_TRIES],
                       u[:, -3].double(), u[:, -2].double())
    return EpochPlan(order, boxes, u[:, -1] < 0.5)


def train_view(image: torch.Tensor, box: torch.Tensor, flip: bool, size: int) -> torch.Tensor:
    """The seed's RandomResizedCrop + flip on a uint8 CHW tensor, for a planned box and flip."""
    top, left, h, w = box.tolist()
    view = F.resized_crop(image, top, left, h, w, [size, size], antialias=True)
    return F.horizontal_flip(view) if flip else view


def resize_weights(lengths: torch.Tensor, size: int, span: int) -> torch.Tensor:
    """(B, size, span) matrices that resize each length-L line to `size`, as antialiased bilinear.

    Row i holds PIL's (and torchvision's antialias=True) triangle filter around source
    centre (i + 0.5) * L / size, widened by L / size when shrinking, cut at the line's end
    and normalised. Columns from L to span are zero, so one batch can mix lengths.
    """
    lengths = lengths.to(torch.float32)[:, None, None]
    scale = lengths / size
    support = scale.clamp(min=1.0)
    centre = scale * (torch.arange(size, device=lengths.device, dtype=torch.float32)[None, :, None] + 0.5)
    x = torch.arange(span, device=lengths.device, dtype=torch.float32)[None, None, :]
    weights = (1 - ((x + 0.5 - centre) / support).abs()).clamp(min=0) * (x < lengths)
    return weights / weights.sum(-1, keepdim=True)


def resized_crops(pixels: torch.Tensor, starts: torch.Tensor, widths: torch.Tensor, index: torch.Tensor,
                  boxes: torch.Tensor, flips: torch.Tensor, size: int) -> torch.Tensor:
    """Batched train_view: uint8 (B, 3, size, size) crops of images `index` in a flat store.

    pixels holds every image's HWC bytes back to back; image k starts at starts[k] and is
    widths[k] wide. All tensors are on one device except `boxes` (B, 4), which stays on the
    CPU so the batch's largest crop is known without waiting for the device. The crops are
    gathered into one float batch, padded to its largest crop, then resized by two batched
    matrix products with resize_weights; a flip is the horizontal matrix reversed.
    """
    device = pixels.device
    span_h, span_w = int(boxes[:, 2].max()), int(boxes[:, 3].max())
    top, left, h, w = boxes.to(device, non_blocking=True).unbind(1)
    # Rows and columns past a crop's edge repeat its last one; their weights are zero.
    rows = torch.minimum(torch.arange(span_h, device=device)[None], h[:, None] - 1) + top[:, None]
    cols = torch.minimum(torch.arange(span_w, device=device)[None], w[:, None] - 1) + left[:, None]
    at = starts[index][:, None, None] + (rows[:, :, None] * widths[index][:, None, None] + cols[:, None, :]) * 3
    crops = pixels[at[..., None] + torch.arange(3, device=device)].permute(0, 3, 1, 2).float()
    down = resize_weights(h, size, span_h)  # (B, size, span_h)
    across = resize_weights(w, size, span_w)  # (B, size, span_w)
    across = torch.where(flips.to(device)[:, None, None], across.flip(1), across)
    out = down[:, None] @ crops @ across.transpose(1, 2)[:, None]
    return out.round_().clamp_(0, 255).to(torch.uint8)


class DecodedImages(Dataset):
    """(augmented uint8 CHW image, label) per row of a decoded split, by the plan of the
    epoch last set (`set_epoch`), drawn from `seed`."""

    def __init__(self, table: pa.Table, size: int, seed: int, classes: tuple[str, ...] = ()):
        self.heights = torch.tensor(table.column("height").to_pylist(), dtype=torch.int64)
        self.widths = torch.tensor(table.column("width").to_pylist(), dtype=torch.int64)
        self.images = [view.reshape(h, w, 3) for view, h, w in
                       zip(pixel_views(table.column("pixels")), self.heights.tolist(), self.widths.tolist())]
        self.labels = table.column("label").to_pylist()
        self.classes = classes  # label order, as the decode stage's file records them
        self.size = size
        self.seed = seed
        self.plan: EpochPlan | None = None

    def set_epoch(self, epoch: int) -> None:
        """Draw the plan the next iteration follows."""
        self.plan = plan_epoch(self.seed, epoch, self.heights, self.widths)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = as_tensor(self.images[index]).permute(2, 0, 1)  # HWC -> CHW, no copy
        plan = self.plan
        return train_view(image, plan.boxes[index], bool(plan.flips[index]), self.size), self.labels[index]


def batch_bounds(images: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """Each global batch of an epoch, as (start, end) in the plan's order: `batch_size`
    images, the last one the rest.

    A rest so small that a process's share of it would be a single image joins the batch
    before it (in one process: a rest of one). BatchNorm normalises a step on one image by
    that image's own statistics alone, and at train.image_size 32 or less ResNet-18's last
    BatchNorm sees one value per channel, on which torch raises (as it would have for d2l's
    loader). A train split of 129 images at batch 128 trains as one batch of 129: every image
    once an epoch, as before."""
    starts = list(range(0, images, batch_size))
    rest = images - starts[-1] if starts else 0
    if len(starts) > 1 and rest < min(2 * world, batch_size):
        # Shares as distributed.share cuts them: the rest over `world` parts, some of one
        # image when it is under 2 * world.
        starts.pop()
    return list(zip(starts, [*starts[1:], images]))


class PlannedBatches(Sampler[list[int]]):
    """The DataLoader's batch sampler: the current plan's order, cut into global batches
    (batch_bounds), of which this process takes its share (all of it in one process)."""

    def __init__(self, dataset: DecodedImages, batch_size: int, shard: Shard = SINGLE):
        self.dataset, self.shard = dataset, shard
        self.bounds = batch_bounds(len(dataset), batch_size, shard.world)

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.dataset.plan.order
        for start, end in self.bounds:
            yield share(order[start:end], self.shard).tolist()


def collate(samples: list[tuple[torch.Tensor, int]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """default_collate, and an empty batch of `size` crops for an empty share (see
    hotdog.training.distributed)."""
    if samples:
        return default_collate(samples)
    return torch.empty((0, 3, size, size), dtype=torch.uint8), torch.empty(0, dtype=torch.int64)


def _leave_stopping_to_the_main_process(worker_id: int) -> None:
    """A worker ignores SIGTERM, SIGHUP and SIGINT, which a terminal or a process-group kill
    sends it with the stage: the stage stops on them and shuts its workers down in order
    (hotdog.runner.stage.run_main), and a worker whose stage is gone exits by itself. A worker
    killed beside it would only add a traceback about its own death to the log."""
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)


class WorkerBatches:
    """Train batches augmented per image in DataLoader workers (the `workers` path)."""

    name = "workers"

    def __init__(self, images: DecodedImages, batch_size: int, num_workers: int, shard: Shard = SINGLE):
        self.images = images
        self.loader = DataLoader(
            images, batch_sampler=PlannedBatches(images, batch_size, shard),
            collate_fn=partial(collate, size=images.size),
            num_workers=num_workers,
            # Workers are re-created each epoch so they see the new plan; that costs a
            # process start per epoch, which is small next to an epoch of training.
            persistent_workers=False,
            worker_init_fn=_leave_stopping_to_the_main_process if num_workers else None,
        )

    def set_epoch(self, epoch: int) -> None:
        self.images.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return iter(self.loader)


class ResidentBatches:
    """Train batches from the whole split held on `device`, augmented there (the `device` path)."""

    name = "device"

    def __init__(self, images: DecodedImages, batch_size: int, device: torch.device, shard: Shard = SINGLE):
        self.images, self.size, self.shard = images, images.size, shard
        self.bounds = batch_bounds(len(images), batch_size, shard.world)
        sizes = images.heights * images.widths * 3
        self.pixels = torch.empty(int(sizes.sum()), dtype=torch.uint8, device=device)
        starts = torch.cumsum(sizes, 0) - sizes
        for image, start in zip(images.images, starts.tolist()):  # one image at a time: no host copy
            self.pixels[start:start + image.size].copy_(as_tensor(image.reshape(-1)))
        self.starts, self.widths = starts.to(device), images.widths.to(device)
        self.labels = torch.tensor(images.labels, device=device)

    def set_epoch(self, epoch: int) -> None:
        self.images.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.bounds)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self.images.plan
        # Once an epoch: a blocking copy to CUDA waits for the stream to drain, so one per
        # batch would stall every step (hotdog cuda-check counts such waits).
        flips = plan.flips.to(self.pixels.device)
        for start, end in self.bounds:
            index = share(plan.order[start:end], self.shard)
            on_device = index.to(self.pixels.device, non_blocking=True)
            yield (resized_crops(self.pixels, self.starts, self.widths, on_device, plan.boxes[index],
                                 flips[on_device], self.size), self.labels[on_device])


# The share of the device's free memory the decoded train split may take on the `device`
# path. The rest is for the model, its activations and gradients, the batch's crops and
# cuDNN's workspaces: ResNet-18 at batch 128, 224 px, needs a few GiB of it.
DEVICE_SHARE = 0.5


def split_bytes(images: DecodedImages) -> int:
    """What the decoded train split takes on the device (uint8 pixels)."""
    return int((images.heights * images.widths * 3).sum())


def free_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device; None for the CPU, whose memory the path shares anyway."""
    return torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None


def pick_augment(augment: str, device: torch.device, needed: int, free: int | None) -> tuple[str, str | None]:
    """Where to augment, and why `auto` did not choose the device when it did not."""
    if augment != "auto":
        return augment, None
    if device.type != "cuda":
        return "workers", None
    if free is not None and needed > DEVICE_SHARE * free:
        gib = 2 ** 30
        return "workers", (f"train.augment auto: the decoded train split ({needed / gib:.1f} GiB) is more than "
                           f"{DEVICE_SHARE:.0%} of the {free / gib:.1f} GiB free on {device}; augmenting on "
                           f"DataLoader workers instead (slower; set train.augment: device to force it)")
    return "device", None


def train_batches(images: DecodedImages, augment: str, batch_size: int, num_workers: int, device: torch.device,
                  free: int | None = None, shard: Shard = SINGLE) -> WorkerBatches | ResidentBatches:
    """The augmentation path train.augment asks for. `auto` keeps the data on a CUDA device
    when the split fits in DEVICE_SHARE of its free memory (`free`, else asked of CUDA)."""
    if augment == "auto" and device.type == "cuda" and free is None:
        free = free_memory(device)
    augment, why = pick_augment(augment, device, split_bytes(images), free)
    if why:
        print(why, flush=True)
    if augment == "device":
        return ResidentBatches(images, batch_size, device, shard)
    return WorkerBatches(images, batch_size, num_workers, shard)


def read_train_images(path: Path, size: int, seed: int) -> DecodedImages:
    """The decode stage's train split, memory-mapped, to be augmented with `seed`."""
    table = read_arrow(path, DECODED, "decode")
    return DecodedImages(table, size, seed, classes_of(table, path, "decode"))


