"""Training shared by the `finetune` and `scratch` stages, which differ only in params.

Reads the decoded images and (finetune) the verified weights; writes
models/<run>.pt and metrics/<run>.json, metrics/<run>_epochs.json.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from torch import nn
from torch.utils.data import TensorDataset
from tqdm import tqdm

from stages.checkpoint import load_state
from stages.data import DecodedImages, make_loader, normalize, test_tensors
from stages.files import atomic_path, write_json
from stages.hardware import autocast, pick_device, pick_precision, seed_everything
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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # CUDA runs async; time the work, not its launch


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
    loss_sum, correct, examples, step_seconds = 0.0, 0, 0, 0.0
    wall_start = time.perf_counter()
    for x, y in batches(loader, desc):
        _sync(device)
        start = time.perf_counter()
        x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
        y = y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, precision):
            logits = model(x)
        losses = loss_fn(logits.float(), y)
        # Summed, not averaged, as d2l's train_ch13: the lr in params.yaml belongs to a sum.
        losses.sum().backward()
        optimizer.step()
        loss_sum += losses.detach().sum().item()  # .item() waits for the step to finish
        correct += (logits.argmax(1) == y).sum().item()
        examples += y.numel()
        step_seconds += time.perf_counter() - start
    return EpochStats(loss_sum, correct, examples, step_seconds, time.perf_counter() - wall_start)


@torch.inference_mode()
def predict(model: nn.Module, loader, device: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 logits, labels) on the CPU for every example of `loader`, in order."""
    model.eval()
    all_logits, all_labels = [], []
    for x, y in loader:
        x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            all_logits.append(model(x).float().cpu())
        all_labels.append(y)
    return torch.cat(all_logits), torch.cat(all_labels)


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


def summarize(records: list[dict], stats: list[EpochStats], device: torch.device, precision: str) -> dict:
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
    }


def fit(model: nn.Module, train_set: DecodedImages, test_views: TensorDataset, run: str,
        params: TrainParams, run_params: RunParams, seed: int, device: torch.device,
        precision: str) -> Iterator[tuple[dict, EpochStats]]:
    """Train for params.epochs, yielding each epoch's record as soon as it is done."""
    groups = param_groups(model, run_params.lr, run_params.head_lr_mult)
    optimizer = torch.optim.SGD(groups, lr=run_params.lr, weight_decay=params.weight_decay)
    train_loader = make_loader(train_set, params, shuffle_seed=seed)
    test_loader = make_loader(test_views, params)
    for epoch in range(1, params.epochs + 1):
        start = time.perf_counter()
        train_set.set_epoch(epoch)
        stats = train_one_epoch(model, train_loader, optimizer, device, precision,
                                desc=f"{run} epoch {epoch}/{params.epochs}")
        test_acc = accuracy(*predict(model, test_loader, device, precision))
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
    pretrained = None
    if run_params.pretrained:
        pretrained = load_state(paths.weights, f"weights file {paths.weights}", "run `dvc repro weights`")
    model = build_model(pretrained, run_params.head_init).to(device, memory_format=torch.channels_last)
    train_set = DecodedImages(read_arrow(paths.decoded_file("train"), DECODED, "decode"), params, seed)
    # Only the test views are kept, so the test file's mapping is released at once.
    test_views = test_tensors(DecodedImages(read_arrow(paths.decoded_file("test"), DECODED, "decode"), params))
    print(f"{run}: {len(train_set)} train / {len(test_views)} test images on {device.type}, {precision}", flush=True)
    records, stats = [], []
    for record, epoch_stats in fit(model, train_set, test_views, run, params, run_params, seed, device, precision):
        records.append(record)
        stats.append(epoch_stats)
        print(format_record(run, params.epochs, record), flush=True)
    summary = summarize(records, stats, device, precision)
    used = {"seed": seed, "train": params.model_dump(), run: run_params.model_dump()}
    save_checkpoint(paths.checkpoint(run), model, run, used, summary)
    write_json(paths.run_epochs(run), records)
    write_json(paths.run_summary(run), summary)
    return summary


def main(run: str) -> None:
    """Entry point of the `finetune` and `scratch` stages."""
    p = load_params(*sections(run))
    train_run(run, p.seed, p.train, getattr(p, run), p.paths)
