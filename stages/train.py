"""Training shared by the `finetune` and `scratch` stages, which differ only in params.

Reads the decoded images and (finetune) the verified weights; writes
models/<run>.pt and metrics/<run>.json, metrics/<run>_epochs.json.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from stages.checkpoint import load_state
from stages.data import DecodedImages, EvalViews, eval_views, normalize, train_batches
from stages.files import atomic_path, write_json
from stages.hardware import (
    autocast,
    configure_backends,
    pick_device,
    pick_precision,
    seed_everything,
    synchronize,
)
from stages.model import build_model, param_groups
from stages.params import Paths, RunParams, TrainParams, load_params
from stages.schema import DECODED, read_arrow


class EpochStats(NamedTuple):
    loss_sum: float
    correct: int
    examples: int
    step_seconds: float  # forward, backward, step only: what d2l's examples/sec times
    wall_seconds: float  # the whole pass, data loading included


def sections(run: str) -> tuple[str, ...]:
    """The params a training stage reads: they must equal its `params:` in dvc.yaml."""
    return ("seed", "train", run)


def outputs(paths: Paths, run: str) -> list[Path]:
    """What a training stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.checkpoint(run), paths.run_summary(run), paths.run_epochs(run)]


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


def batches(loader, desc: str) -> Iterator:
    """The loader's batches, with progress: a bar on a terminal, else a line per tenth.

    The plain lines ("finetune epoch 1/5: batch 4/16") are what a log shows, and what the
    Prefect flow reads to update its progress artifact.
    """
    if sys.stderr.isatty():
        yield from tqdm(loader, desc=desc, unit="batch", leave=False)
        return
    total = len(loader)
    every = max(1, total // 10)
    for i, batch in enumerate(loader, 1):
        yield batch
        if i % every == 0 or i == total:
            print(f"{desc}: batch {i}/{total}", flush=True)


def train_one_epoch(model: nn.Module, loader, optimizer, device: torch.device, precision: str,
                    desc: str) -> EpochStats:
    """One pass over `loader` with the seed's summed cross-entropy loss."""
    model.train()
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    # The sums stay on the device until the epoch ends: reading them every step would
    # make the host wait for each step.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    examples, clock = 0, StepClock(device)
    synchronize(device)
    wall_start = time.perf_counter()
    for x, y in batches(loader, desc):
        with clock.step():
            x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                logits = model(x)
            losses = loss_fn(logits.float(), y)
            # Summed, not averaged, as d2l's train_ch13: the lr in params.yaml belongs to a sum.
            losses.sum().backward()
            optimizer.step()
            loss_sum += losses.detach().sum()
            correct += (logits.argmax(1) == y).sum()
        examples += len(y)
    synchronize(device)
    wall = time.perf_counter() - wall_start
    return EpochStats(loss_sum.item(), int(correct.item()), examples, clock.total(), wall)


@torch.inference_mode()
def predict(model: nn.Module, views: EvalViews, batch_size: int, device: torch.device,
            precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 logits, labels) on the CPU for every view, in order."""
    model.eval()
    all_logits = []
    for x, _ in views.batches(batch_size):
        x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            all_logits.append(model(x).float())
    logits = torch.cat(all_logits) if all_logits else torch.empty(0, 2)
    return logits.cpu(), views.labels.cpu()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows whose argmax is the label."""
    return (logits.argmax(1) == labels).float().mean().item() if len(labels) else 0.0


def epoch_record(epoch: int, stats: EpochStats, test_acc: float, seconds: float) -> dict:
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


def fit(model: nn.Module, train, evals: EvalViews, run: str, params: TrainParams, run_params: RunParams,
        device: torch.device, precision: str) -> Iterator[tuple[dict, EpochStats]]:
    """Train for params.epochs on `train` (see data.train_batches), yielding each epoch's
    record as soon as it is done."""
    groups = param_groups(model, run_params.lr, run_params.head_lr_mult)
    optimizer = torch.optim.SGD(groups, lr=run_params.lr, weight_decay=params.weight_decay)
    for epoch in range(1, params.epochs + 1):
        start = time.perf_counter()
        train.set_epoch(epoch)
        stats = train_one_epoch(model, train, optimizer, device, precision,
                                desc=f"{run} epoch {epoch}/{params.epochs}")
        test_acc = accuracy(*predict(model, evals, params.batch_size, device, precision))
        yield epoch_record(epoch, stats, test_acc, time.perf_counter() - start), stats


def format_record(run: str, epochs: int, r: dict) -> str:
    """One log line per epoch, in d2l's words."""
    return (f"{run} epoch {r['epoch']}/{epochs}: loss {r['loss']:.3f}, train acc {r['train_acc']:.3f}, "
            f"test acc {r['test_acc']:.3f}, {r['examples_per_sec']:.1f} examples/sec (d2l), "
            f"{r['examples_per_sec_wall']:.1f} examples/sec (wall), {r['epoch_seconds']:.1f} s")


def save_checkpoint(dest: Path, model: nn.Module, run: str, params: dict, summary: dict) -> None:
    """The state dict (CPU, contiguous) with the params it was trained with."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(dest) as tmp:
        torch.save({"run": run, "state_dict": state, "params": params, "summary": summary}, tmp)


def train_run(run: str, seed: int, params: TrainParams, run_params: RunParams, paths: Paths) -> dict:
    """Everything a training stage does; returns the summary it wrote."""
    device = pick_device(params.device)
    precision = pick_precision(params.precision, device)
    seed_everything(seed)
    configure_backends(device)
    pretrained = None
    if run_params.pretrained:
        pretrained = load_state(paths.weights, f"weights file {paths.weights}", "run `dvc repro weights`")
    model = build_model(pretrained, run_params.head_init).to(device, memory_format=torch.channels_last)
    train = train_batches(DecodedImages(read_arrow(paths.decoded_file("train"), DECODED, "decode"), params, seed),
                          params, device)
    # Only the test views are kept, so the test file's mapping is released at once.
    evals = eval_views(DecodedImages(read_arrow(paths.decoded_file("test"), DECODED, "decode"), params)).to(device)
    print(f"{run}: {len(train.images)} train / {len(evals.labels)} test images on {device.type}, {precision}, "
          f"augmented on {train.name}", flush=True)
    records, stats = [], []
    for record, epoch_stats in fit(model, train, evals, run, params, run_params, device, precision):
        records.append(record)
        stats.append(epoch_stats)
        print(format_record(run, params.epochs, record), flush=True)
    summary = summarize(records, stats, device, precision, train.name)
    used = {"seed": seed, "train": params.model_dump(), run: run_params.model_dump()}
    save_checkpoint(paths.checkpoint(run), model, run, used, summary)
    write_json(paths.run_epochs(run), records)
    write_json(paths.run_summary(run), summary)
    return summary


def main(run: str) -> None:
    """Entry point of the `finetune` and `scratch` stages."""
    p = load_params(*sections(run))
    train_run(run, p.seed, p.train, getattr(p, run), p.paths)
