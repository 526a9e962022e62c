"""The CUDA-only paths against their CPU counterparts: `hotdog cuda-check [IMAGES SIZE BATCH]`

1. An epoch of ResidentBatches (augment: device, built on resized_crops) on the training
   device against the same on the CPU: the same labels, every value within one level, and
   ties only.
2. A short training run through ResidentBatches and StepClock: the step time that CUDA
   events report is positive and below the wall time.
3. The exported TorchScript file (hotdog.model.export), loaded and moved to the device,
   answers as it does on the CPU (within 1e-3: TF32 convolutions on CUDA round differently).
4. No step of a training epoch makes the host wait for the device: an epoch of twice the
   steps makes no more waits (torch's sync debug mode counts them; CUDA only). The loop
   keeps its sums on the device for this; one blocking copy per step undoes it, as
   normalize() and the crops' flips each did before 2026-12-07.

Prints what it measured and exits with status 1 when a check fails. Without CUDA both sides
run on the CPU, so CI runs it too (tests/test_bench.py) and it cannot rot unnoticed. From a checkout without
the install (a bare GPU box): python -m hotdog.training.cuda_check
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from hotdog.core.names import CLASSES
from hotdog.core.schema import DECODED
from hotdog.data.augment import DecodedImages, ResidentBatches
from hotdog.model.hardware import pick_device, pick_precision, synchronize
from hotdog.model.resnet import build_model
from hotdog.training.train import train_one_epoch

# Up to this share of values may differ by one level: where float sums on two devices
# round a tie differently.
TIE_SHARE = 1e-3


def photos(n: int, seed: int = 0) -> list[np.ndarray]:
    """n HWC uint8 images of the decode stage's shapes (shorter side 256), noise on smooth."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        long = int(rng.integers(256, 520))
        h, w = (256, long) if rng.random() < 0.7 else (long, 256)
        smooth = np.kron(rng.integers(0, 256, (h // 32 + 1, w // 32 + 1, 3)), np.ones((32, 32, 1)))[:h, :w]
        images.append(np.clip(smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8))
    return images


def decoded_table(images: list[np.ndarray]) -> pa.Table:
    """The images as the decode stage's table (labels alternate)."""
    return pa.table({"path": [f"{i}.png" for i in range(len(images))],
                     "label": [i % 2 for i in range(len(images))],
                     "height": [i.shape[0] for i in images],
                     "width": [i.shape[1] for i in images],
                     "pixels": [i.tobytes() for i in images]}, schema=DECODED)


def check_crops(device: torch.device, images: list[np.ndarray], size: int, batch: int) -> bool:
    """An epoch of ResidentBatches on `device` vs on the CPU; prints the differences and the rate."""
    table = decoded_table(images)
    cpu, dev = (ResidentBatches(DecodedImages(table, size, seed=0), batch, d) for d in (torch.device("cpu"), device))
    cpu.set_epoch(1)
    dev.set_epoch(1)
    worst, ties, total, seconds = 0, 0, 0, 0.0
    batches = iter(dev)
    for x_cpu, y_cpu in cpu:
        synchronize(device)
        began = time.perf_counter()
        x_dev, y_dev = next(batches)
        synchronize(device)
        seconds += time.perf_counter() - began
        diff = (x_dev.cpu().int() - x_cpu.int()).abs()
        worst, ties, total = max(worst, int(diff.max())), ties + int((diff > 0).sum()), total + diff.numel()
        worst = worst if torch.equal(y_dev.cpu(), y_cpu) else 256  # labels must match exactly
    ok = worst <= 1 and ties / total <= TIE_SHARE
    print(f"resized_crops on {device.type} vs cpu: max difference {worst} level(s), "
          f"{ties / total:.2e} of values differ (allowed: 1 level, {TIE_SHARE:.0e}); "
          f"{len(images) / seconds:.0f} crops/s on {device.type} (first batch included): "
          f"{'ok' if ok else 'FAILED'}")
    return ok


def check_training(device: torch.device, images: list[np.ndarray], size: int, batch: int) -> bool:
    """One epoch through ResidentBatches and StepClock on `device`; prints its rates."""
    train = ResidentBatches(DecodedImages(decoded_table(images), size, seed=0), batch, device)
    train.set_epoch(1)
    precision = pick_precision("auto", device)
    model = build_model(None, "default", CLASSES).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    stats = train_one_epoch(model, train, optimizer, device, precision, desc="cuda_check")
    ok = 0 < stats.step_seconds <= stats.wall_seconds and stats.examples == len(images)
    print(f"one epoch of {stats.examples} images, {precision}: {stats.examples / stats.wall_seconds:.0f} "
          f"ex/s wall, {stats.examples / stats.step_seconds:.0f} ex/s in steps (first epoch, "
          f"cuDNN's search included): {'ok' if ok else 'FAILED'}")
    return ok


def host_waits(work: Callable[[], object]) -> int:
    """How many times `work` makes the host wait for a CUDA stream (a blocking copy, .item(),
    a stream sync), as torch's sync debug mode reports them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            work()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def check_host_waits(device: torch.device, images: list[np.ndarray], size: int, batch: int) -> bool:
    """Training epochs of n and 2n images through ResidentBatches on `device`: the host must
    wait for the device as often in both, at the epoch's ends only (its sums read once)."""
    if device.type != "cuda":
        print("host waits in a training step: not counted (torch counts them on CUDA only)", flush=True)
        return True
    model = build_model(None, "default", CLASSES).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-5)
    precision = pick_precision("auto", device)

    def epoch(copies: int) -> tuple[int, int]:
        """(steps, host waits) of an epoch over `copies` copies of the images."""
        train = ResidentBatches(DecodedImages(decoded_table(images * copies), size, seed=0), batch, device)
        train.set_epoch(1)
        return len(train), host_waits(lambda: train_one_epoch(model, train, optimizer, device, precision, None))

    epoch(1)  # warms up: cuDNN's first calls, normalize's constants
    (steps, few), (more_steps, more) = epoch(1), epoch(2)
    ok = more == few
    print(f"host waits for the device in a training epoch: {few} at {steps} steps, {more} at {more_steps} steps "
          f"({'ok: none per step' if ok else 'FAILED: a step makes the host wait'})", flush=True)
    return ok


def check_torchscript(device: torch.device, size: int) -> bool:
    """The TorchScript export on `device` against the same file on the CPU."""
    import tempfile
    import warnings
    from pathlib import Path

    from hotdog.model.export import to_torchscript

    torch.manual_seed(0)
    model = build_model(None, "default", CLASSES).eval()
    views = torch.randint(0, 256, (8, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation note
        to_torchscript(model, size, {}, Path(tmp) / "m.pt")
        module = torch.jit.load(str(Path(tmp) / "m.pt"), map_location="cpu")
        with torch.inference_mode():
            on_cpu = module(views)
            on_device = module.to(device)(views.to(device)).cpu()
    worst = (on_cpu - on_device).abs().max().item()
    ok = worst <= 1e-3
    print(f"TorchScript export on {device.type} vs cpu: max difference {worst:.1e} in a probability "
          f"{'(ok)' if ok else '(FAILED: more than 1e-3)'}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hotdog cuda-check", description=__doc__.splitlines()[0])
    parser.add_argument("sizes", nargs="*", type=int, metavar="IMAGES SIZE BATCH",
                        help="images, crop size and batch size (default: 512 224 128)")
    args = parser.parse_args(argv)
    if args.sizes and len(args.sizes) != 3:
        parser.error("give all three of IMAGES SIZE BATCH, or none")
    n, size, batch = args.sizes or (512, 224, 128)
    device = pick_device("auto")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "no CUDA: both sides on the CPU"
    print(f"device: {device.type} ({name}), torch {torch.__version__}", flush=True)
    images = photos(n)
    ok = check_crops(device, images, size, batch)
    ok = check_training(device, images, size, batch) and ok
    ok = check_torchscript(device, size) and ok
    ok = check_host_waits(device, images, size, batch) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
