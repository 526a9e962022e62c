"""Training, shared by the `finetune` and `scratch` stages, which differ only in params:
the seed's loop (summed loss, plain SGD), its per-epoch records and the run's summary."""

from __future__ import annotations

import contextlib
import time
from typing import Callable, Iterator, NamedTuple

import torch
from torch import nn

from hotdog.core import events
from hotdog.core.errors import StageError
from hotdog.core.params import RunParams, TrainParams
from hotdog.core.progress import tracked
from hotdog.data.augment import DecodedImages, train_batches
from hotdog.data.transforms import EvalViews, normalize
from hotdog.model.hardware import (
    autocast,
    configure_backends,
    pick_device,
    pick_precision,
    seed_everything,
    synchronize,
)
from hotdog.model.inference import predict
from hotdog.model.resnet import build_model, freeze_body, param_groups, train_mode
from hotdog.training.distributed import SINGLE, Shard, all_sum, rank_device, wrap
from hotdog.training.optim import SGD
from hotdog.training.resume import Snapshot

# ResNet-18 halves a feature map five times: at this image_size or less, its last one is 1 x 1.
ONE_BY_ONE = 32


class EpochStats(NamedTuple):
    loss_sum: float
    correct: int
    examples: int
    step_seconds: float  # forward, backward, step only: what d2l's examples/sec times
    wall_seconds: float  # the whole pass, data loading included


class StepClock:
    """Adds up the time of training steps only, as d2l's examples/sec counts it.

    On CUDA it records events around each step and reads them once per epoch: a host
    wait per step, as d2l's code has, would starve the GPU.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self.seconds = 0.0

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            self.events.append((start, end))
        else:
            start = time.perf_counter()
            yield
            self.seconds += time.perf_counter() - start

    def total(self) -> float:
        """Seconds in steps so far (on CUDA, waits for the last one to finish)."""
        if self.events:
            self.events[-1][1].synchronize()
            self.seconds += sum(a.elapsed_time(b) for a, b in self.events) / 1000
            self.events = []
        return self.seconds


def train_one_epoch(model: nn.Module, loader, optimizer, device: torch.device, precision: str,
                    desc: str | None, on_tenth: Callable[[float], None] | None = None,
                    net: nn.Module | None = None) -> EpochStats:
    """One pass over `loader` with the seed's summed cross-entropy loss. `net` is what the
    batches go through, when not `model` itself: DDP over it, for this process's shares of
    the global batches (hotdog.training.distributed); the loss, accuracy and example counts are then
    summed over the processes."""
    net = model if net is None else net
    train_mode(model)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    # The sums stay on the device until the epoch ends: reading them every step would
    # make the host wait for each step.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    examples, clock = 0, StepClock(device)
    synchronize(device)
    wall_start = time.perf_counter()
    for x, y in tracked(loader, len(loader), desc, "batch", on_tenth):
        with clock.step():
            x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            optimizer.zero_grad()  # set_to_none, the default
            with autocast(device, precision):
                logits = net(x)
            losses = loss_fn(logits.float(), y)
            # Summed, not averaged, as d2l's train_ch13: the lr in params.yaml belongs to a sum.
            losses.sum().backward()
            optimizer.step()
            loss_sum += losses.detach().sum()
            correct += (logits.argmax(1) == y).sum()
        examples += len(y)
    synchronize(device)
    wall = time.perf_counter() - wall_start
    loss, right, seen = all_sum([loss_sum.item(), float(correct.item()), float(examples)], device)
    return EpochStats(loss, int(right), int(seen), clock.total(), wall)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose argmax is the label."""
    return (logits.argmax(1) == labels).float().mean().item() if len(labels) else 0.0


def epoch_record(epoch: int, stats: EpochStats, test_acc: float | None, seconds: float) -> dict:
    """One row of metrics/<run>_epochs.json (a DVC plot)."""
    return {
        "epoch": epoch,
        "loss": stats.loss_sum / stats.examples,
        "train_acc": stats.correct / stats.examples,
        "test_acc": test_acc,
        "examples_per_sec": stats.examples / stats.step_seconds,
        "examples_per_sec_wall": stats.examples / stats.wall_seconds,
        "epoch_seconds": seconds,
    }


def summarize(records: list[dict], stats: list[EpochStats], device: torch.device, precision: str,
              augment: str) -> dict:
    """metrics/<run>.json: the last epoch's figures and the speed over all epochs."""
    last, examples = records[-1], sum(s.examples for s in stats)
    return {
        "epochs": len(records),
        "loss": last["loss"],
        "train_acc": last["train_acc"],
        "test_acc": last["test_acc"],
        "examples_per_sec": examples / sum(s.step_seconds for s in stats),
        "examples_per_sec_wall": examples / sum(s.wall_seconds for s in stats),
        "train_seconds": sum(r["epoch_seconds"] for r in records),
        "device": device.type,
        "precision": precision,
        "augment": augment,
    }


def fit(model: nn.Module, optimizer: SGD, train, evals: EvalViews, run: str,
        params: TrainParams, device: torch.device, precision: str, first: int = 1,
        net: nn.Module | None = None, shard: Shard = SINGLE) -> Iterator[tuple[dict, EpochStats]]:
    """Train epochs first..params.epochs on `train` (see data.train_batches), yielding each
    epoch's record as soon as it is done. Only the main process evaluates and reports
    progress; the others yield records without a test accuracy."""
    for epoch in range(first, params.epochs + 1):
        start = time.perf_counter()
        train.set_epoch(epoch)

        def progress(share: float, epoch: int = epoch) -> None:
            events.emit(events.Progress(stage=run, done=(epoch - 1 + share) / params.epochs))

        desc = f"{run} epoch {epoch}/{params.epochs}" if shard.main else None
        stats = train_one_epoch(model, train, optimizer, device, precision, desc, progress if shard.main else None,
                                net=net)
        test_acc = accuracy(*predict(model, evals, params.batch_size, device, precision, f"{desc}, test")) \
            if shard.main else None
        yield epoch_record(epoch, stats, test_acc, time.perf_counter() - start), stats


def format_record(run: str, epochs: int, r: dict) -> str:
    """One log line per epoch, in d2l's words."""
    return (f"{run} epoch {r['epoch']}/{epochs}: loss {r['loss']:.3f}, train acc {r['train_acc']:.3f}, "
            f"test acc {r['test_acc']:.3f}, {r['examples_per_sec']:.1f} examples/sec (d2l), "
            f"{r['examples_per_sec_wall']:.1f} examples/sec (wall), {r['epoch_seconds']:.1f} s")


class TrainResult(NamedTuple):
    model: nn.Module
    records: list[dict]  # one per epoch: metrics/<run>_epochs.json
    summary: dict  # metrics/<run>.json
    params: dict  # what the checkpoint records it was trained with


def trained_with(run: str, seed: int, params: TrainParams, run_params: RunParams) -> dict:
    """The params that decide a training run's result: its checkpoint records them."""
    return {"seed": seed, "train": params.model_dump(), run: run_params.model_dump()}


def train(run: str, seed: int, params: TrainParams, run_params: RunParams, num_workers: int,
          pretrained: dict | None, images: DecodedImages, evals: EvalViews,
          on_epoch: Callable[[Snapshot], None] | None = None, start: Snapshot | None = None,
          shard: Shard = SINGLE) -> TrainResult:
    """Everything a training stage computes: the seed's recipe on `images` (train split,
    augmented with `seed`), scored on `evals` after each epoch. Writes nothing; `on_epoch`
    gets a snapshot after each epoch (its tensors are the live ones: save, do not keep).
    Given the snapshot `start`, it carries on from the epoch after it, as if never stopped.
    Run in each of several processes (hotdog.training.distributed), it trains this process's `shard`;
    only the main process evaluates, prints and calls `on_epoch`."""
    device = rank_device(pick_device(params.device), shard)
    precision = pick_precision(params.precision, device)
    seed_everything(seed)
    configure_backends(device)
    model = build_model(pretrained, run_params.head_init, images.classes).to(device, memory_format=torch.channels_last)
    if run_params.freeze_body:
        freeze_body(model)
    elif params.batch_size < 2 * shard.world and params.image_size <= ONE_BY_ONE:
        # torch raises on one value per channel in train mode (a frozen body's BatchNorm stays in eval mode).
        raise StageError(f"train.batch_size is {params.batch_size}, which gives each of {shard.world} process(es) "
                         f"one image a step, and at train.image_size {params.image_size} ResNet-18's last BatchNorm "
                         f"then sees one value per channel, which torch cannot train on; set train.batch_size to "
                         f"{2 * shard.world} or more, or train.image_size to {ONE_BY_ONE + 1} or more, in params.yaml")
    groups = param_groups(model, run_params.lr, run_params.head_lr_mult)
    optimizer = SGD(groups, weight_decay=params.weight_decay)
    records: list[dict] = []
    stats: list[EpochStats] = []
    if start is not None:
        model.load_state_dict(start.model)
        optimizer.load_state_dict(start.optimizer)
        records = list(start.records)
        stats = [EpochStats(*s) for s in start.stats]
        # Nothing after set-up draws from torch's generator today (the epoch plans have their
        # own), but a later change might: restoring it keeps a resumed run exact regardless.
        torch.set_rng_state(start.rng)
    net = wrap(model, shard, device)
    train_set = train_batches(images, params.augment, params.batch_size, num_workers, device, shard=shard)
    evals = evals.to(device) if shard.main else evals
    if shard.main:
        processes = f" in {shard.world} processes" if shard.world > 1 else ""
        print(f"{run}: {len(images)} train / {len(evals.labels)} test images on {device.type}{processes}, "
              f"{precision}, augmented on {train_set.name}"
              f"{', body frozen (fc only)' if run_params.freeze_body else ''}", flush=True)
    first = len(records) + 1
    for record, epoch_stats in fit(model, optimizer, train_set, evals, run, params, device, precision, first,
                                   net, shard):
        records.append(record)
        stats.append(epoch_stats)
        if not shard.main:
            continue
        print(format_record(run, params.epochs, record), flush=True)
        if on_epoch is not None:
            on_epoch(Snapshot(len(records), model.state_dict(), optimizer.state_dict(), records,
                              [list(s) for s in stats], torch.get_rng_state()))
    summary = {**summarize(records, stats, device, precision, train_set.name), "processes": shard.world}
    return TrainResult(model, records, summary, trained_with(run, seed, params, run_params))
