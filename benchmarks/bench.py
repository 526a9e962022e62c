"""`make bench`: the seed's code, then the project's finetune stage, on the same images.

Prints wall and d2l-style examples/sec and test accuracy for each, and their ratio.
Run: python -m benchmarks.bench --data data/hotdog --weights data/weights/resnet18.pth
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from benchmarks.seed import finetune_net, train_fine_tuning
from hotdog.core.names import SPLITS
from hotdog.core.params import read_params
from hotdog.data.augment import read_train_images
from hotdog.data.decode import decode_split
from hotdog.data.manifest import scan
from hotdog.data.sizes import eval_resize
from hotdog.data.transforms import normalize, read_eval_views
from hotdog.model.checkpoint import load_state
from hotdog.model.hardware import (
    autocast,
    configure_backends,
    cpu_model,
    isa_summary,
    pick_device,
    seed_everything,
    synchronize,
)
from hotdog.model.resnet import build_model, param_groups
from hotdog.training.optim import SGD
from hotdog.training.train import train

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    """CPU model, its ISA and cores, GPU if any, torch version: enough to compare two rows."""
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu_model()} ({isa_summary()}), {os.cpu_count()} cores{gpu}, torch {torch.__version__}"


def run_seed(args) -> dict:
    """The seed's train_fine_tuning(finetune_net, 5e-5) on args.data."""
    torch.manual_seed(args.seed)
    net = finetune_net(load_state(args.weights, f"weights file {args.weights}", "pass --weights"))
    resize = eval_resize(args.image_size)
    device = pick_device("auto")
    return train_fine_tuning(net, 5e-5, str(args.data), device, batch_size=args.batch_size,
                             num_epochs=args.epochs, size=args.image_size, resize=resize)


def run_project(args, work: Path) -> dict:
    """What the manifest, decode and finetune stages do, on args.data; params from params.yaml."""
    params = read_params()
    train_params = params.train.model_copy(update={"epochs": args.epochs, "batch_size": args.batch_size,
                                                   "image_size": args.image_size,
                                                   "precision": args.precision or params.train.precision})
    workers = os.cpu_count() or 1
    start = time.perf_counter()
    manifest = scan(args.data, params.data.classes, params.data.test_fraction, 1.0, workers)
    manifest_seconds = time.perf_counter() - start
    for split in SPLITS:  # once per data set, not per epoch
        decode_split(args.data, manifest.tables[split], work / f"{split}.arrow", eval_resize(args.image_size), workers)
    decode_seconds = time.perf_counter() - start - manifest_seconds
    pretrained = load_state(args.weights, f"weights file {args.weights}", "pass --weights")
    images = read_train_images(work / "train.arrow", args.image_size, args.seed)
    evals = read_eval_views(work / "test.arrow", args.image_size)[0]
    finetune = params.finetune.model_copy(update={"freeze_body": args.freeze_body})
    result = train("finetune", args.seed, train_params, finetune, params.runtime.num_workers,
                   pretrained, images, evals)
    return {**result.summary, "frozen": args.freeze_body, "manifest_seconds": manifest_seconds,
            "decode_seconds": decode_seconds,
            "wall_by_epoch": [e["examples_per_sec_wall"] for e in result.records]}


CLASSES = ("hotdog", "not-hotdog")


def fresh(device: torch.device, fused: bool | None = None) -> tuple[torch.nn.Module, SGD]:
    """The same start every time: the model as seed 0 builds it, and its optimizer."""
    seed_everything(0)
    model = build_model(None, "xavier", CLASSES).to(device, memory_format=torch.channels_last).train()
    return model, SGD(param_groups(model, 5e-5, 10), weight_decay=1e-3, fused=fused)


def prepared(images: torch.Tensor) -> torch.Tensor:
    """A batch as the step takes it: normalised on the device, channels_last."""
    return normalize(images).contiguous(memory_format=torch.channels_last)


def make_step(model: torch.nn.Module, optimizer: SGD, device: torch.device, precision: str,
              graph: bool = False) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """train_one_epoch's step on a prepared batch: the summed loss, SGD. For a CUDA graph,
    bf16 autocast runs without its cache of cast weights, as torch's CUDA-graph notes require
    (the same casts, made in the graph each time)."""
    loss_fn = torch.nn.CrossEntropyLoss(reduction="none")
    casting = (lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)) \
        if graph and precision == "bf16" else (lambda: autocast(device, precision))

    def step(x: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad()
        with casting():
            logits = model(x)
        loss_fn(logits.float(), labels).sum().backward()
        optimizer.step()

    return step


def run_bare(args, precision: str, images: int) -> dict:
    """The ceiling for this machine: training steps alone, the project's model and step
    (channels_last, `precision`, the summed loss, SGD) on one batch prepared up front, with
    no data loading, augmentation or bookkeeping. `images` is how many to step through after
    two warm-up steps."""
    device = pick_device("auto")
    configure_backends(device)
    model, optimizer = fresh(device)
    g = torch.Generator().manual_seed(args.seed)
    x = prepared(torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size), generator=g,
                               dtype=torch.uint8).to(device))
    y = torch.randint(0, len(CLASSES), (args.batch_size,), generator=g).to(device)
    step = make_step(model, optimizer, device, precision)
    for _ in range(2):
        step(x, y)
    synchronize(device)
    steps = max(1, -(-images // args.batch_size))
    start = time.perf_counter()
    for _ in range(steps):
        step(x, y)
    synchronize(device)
    return {"examples_per_sec": steps * args.batch_size / (time.perf_counter() - start), "precision": precision}


def table(seed: dict, project: dict, bare: dict | None = None) -> str:
    """The side-by-side figures and the ratio, as markdown."""
    rows = ["| | wall ex/s | d2l ex/s | test acc |", "|---|---|---|---|"]
    for name, r in (("seed (d2l's code, fp32)", seed),
                    (f"project (finetune, {project['precision']}{', body frozen' if project['frozen'] else ''})",
                     project)):
        rows.append(f"| {name} | {r['examples_per_sec_wall']:.1f} | {r['examples_per_sec']:.1f} | {r['test_acc']:.3f} |")
    rows.append(f"| project / seed | {project['examples_per_sec_wall'] / seed['examples_per_sec_wall']:.2f}x | "
                f"{project['examples_per_sec'] / seed['examples_per_sec']:.2f}x | "
                f"{100 * (project['test_acc'] - seed['test_acc']):+.1f} points |")
    if bare is not None:
        rate = bare["examples_per_sec"]
        rows.append(f"| bare steps (channels_last, {bare['precision']}, one batch, no data) | | {rate:.1f} | |")
        rows.append(f"| project / bare steps | {project['examples_per_sec_wall'] / rate:.2f}x | "
                    f"{project['examples_per_sec'] / rate:.2f}x | |")
    return "\n".join(rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/hotdog"), help="folder with train/ and test/")
    parser.add_argument("--weights", type=Path, default=Path("data/weights/resnet18.pth"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--freeze-body", action="store_true",
                        help="the project trains fc only (finetune.freeze_body); the seed's side is unchanged")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                        help="the project's precision (default: params.yaml's train.precision); the seed's is fp32")
    parser.add_argument("--bare-images", type=int, default=512,
                        help="images the bare steps go through (the ceiling the project is compared with)")
    parser.add_argument("--record", action="store_true", help="append the figures to --results")
    parser.add_argument("--results", type=Path, default=RESULTS, help=f"where --record writes (default: {RESULTS.name})")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    for path in (args.data / "train", args.data / "test", args.weights):
        if not path.exists():
            sys.exit(f"error: bench: {path} is missing; run `make run` first, or pass --data/--weights")
    print(f"machine: {machine()}", flush=True)
    print("1/3 the seed's code ...", flush=True)
    seed = run_seed(args)
    print("2/3 the project's finetune stage ...", flush=True)
    with tempfile.TemporaryDirectory() as work:
        project = run_project(args, Path(work))
    print("3/3 bare training steps, for the ceiling ...", flush=True)
    bare = run_bare(args, project["precision"], args.bare_images)
    result = table(seed, project, bare)
    # The first epoch carries one-off costs (cuDNN's algorithm search, worker start-up);
    # on a fast GPU they weigh on a short run's mean, so each epoch's rate is shown too.
    by_epoch = ", ".join(f"{r:.1f}" for r in project["wall_by_epoch"])
    print(result)
    print(f"project wall ex/s by epoch: {by_epoch}; augmentation on {project['augment']}")
    print(f"manifest: {project['manifest_seconds']:.1f} s, decode: {project['decode_seconds']:.1f} s "
          "(both once per data set, not counted above)", flush=True)
    if args.record:
        command = "python -m benchmarks.bench " + shlex.join(argv if argv is not None else sys.argv[1:])
        with args.results.open("a") as f:
            f.write(f"\n### {datetime.date.today()}: {command}\n\nMachine: {machine()}. "
                    f"Data: {args.data}, {args.epochs} epoch(s), batch {args.batch_size}, "
                    f"{args.image_size} px. Manifest {project['manifest_seconds']:.1f} s, "
                    f"decode {project['decode_seconds']:.1f} s (once per data set).\n\n"
                    f"{result}\n\nProject wall ex/s by epoch: {by_epoch}; augmentation on "
                    f"{project['augment']}.\n")


if __name__ == "__main__":
    main()
