"""Faster training steps (issue #22): each candidate against the project's own step, in
images a second, and whether it leaves the same weights bit for bit.

All run the same steps on the same batches from the same start: ResNet-18 as the finetune
stage builds it (channels_last, the summed loss, plain SGD with the 10x head), batches of
random uint8 images normalised on the device as training does. No data loading: this is
the step alone, so a candidate's gain shows undiluted. The candidates:
- `project`: the step as hotdog/training/train.py takes it (torch's default SGD kernels:
  foreach on CUDA, a loop on the CPU);
- `fused`: SGD's fused kernel;
- `graph` (CUDA): the whole step, forward, backward and SGD, captured once as a CUDA graph
  and replayed; the first steps run eagerly, as capture needs;
- `autotuner` (CUDA): cuDNN's benchmark mode, which the project leaves off;
- `nondeterministic`: deterministic algorithms off, which the project asks for.
Then figures that are no step: inference at the training batch and at 2x and 4x it (an
eval batch larger than the training one); the one-off cost of a second batch shape (the
short last batch of an epoch) after warming up on the full one; and, on CUDA, what starting
CUDA costs a fresh process, alone and beside reading inputs as the training stages and
evaluate now do (hotdog.model.hardware.device_starting), each in new processes.

Run from the repo root: python -m benchmarks.step [--steps 40] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from benchmarks.bench import CLASSES, RESULTS, fresh, machine, make_step, prepared
from hotdog.core.files import file_digest
from hotdog.data.transforms import normalize
from hotdog.model.hardware import (
    autocast,
    device_starting,
    pick_device,
    pick_precision,
    synchronize,
)

WARM_UP = 3  # eager steps before timing; a graph is captured after them


@contextlib.contextmanager
def switches(autotuner: bool = False, deterministic: bool = True) -> Iterator[None]:
    """cuDNN's autotuner and ATen's deterministic switch as asked, restored after."""
    saved = torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()
    torch.backends.cudnn.benchmark = autotuner
    torch._C._set_deterministic_algorithms(deterministic, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved[0]
        torch._C._set_deterministic_algorithms(saved[1], warn_only=True)


def batches(count: int, size: int, image_size: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`count` fixed batches of uint8 images and labels, the same for every candidate."""
    g = torch.Generator().manual_seed(0)
    return [(torch.randint(0, 256, (size, 3, image_size, image_size), generator=g, dtype=torch.uint8).to(device),
             torch.randint(0, len(CLASSES), (size,), generator=g).to(device)) for _ in range(count)]


def graphed(step: Callable, data: list, device: torch.device) -> tuple[Callable[[int], None], Callable[[], None]]:
    """The step as a CUDA graph: WARM_UP eager steps on a side stream (capture needs them),
    then one capture. Returns (run step i, which prepares batch i into the captured input
    and replays; its warm-up: the eager steps and the capture). The preparing stays out of
    the graph, where the training loop's own batches would come from; the graph holds the
    step the candidates share."""
    x, labels = prepared(data[0][0]), data[0][1].clone()
    graph = torch.cuda.CUDAGraph()

    def warm_up() -> None:
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for i in range(WARM_UP):
                images, target = data[i % len(data)]
                step(prepared(images), target)
        torch.cuda.current_stream(device).wait_stream(side)
        with torch.cuda.graph(graph):
            step(x, labels)

    def run(i: int) -> None:
        images, target = data[i % len(data)]
        x.copy_(prepared(images))
        labels.copy_(target)
        graph.replay()

    return run, warm_up


def time_steps(run: Callable[[int], None], warm_up: Callable[[], None], steps: int, device: torch.device) -> float:
    """Seconds for steps WARM_UP..steps-1 of `run`, after `warm_up` did the first ones."""
    warm_up()
    synchronize(device)
    start = time.perf_counter()
    for i in range(WARM_UP, steps):
        run(i)
    synchronize(device)
    return time.perf_counter() - start


def candidate(name: str, device: torch.device, precision: str, data: list, steps: int) -> dict:
    """One candidate's rate and its weights after `steps` steps."""
    model, optimizer = fresh(device, fused=True if name == "fused" else None)
    step = make_step(model, optimizer, device, precision, graph=name == "graph")
    with switches(autotuner=name == "autotuner", deterministic=name != "nondeterministic"):
        if name == "graph":
            run, warm_up = graphed(step, data, device)
        else:
            def run(i: int) -> None:
                images, labels = data[i % len(data)]
                step(prepared(images), labels)

            def warm_up() -> None:
                for i in range(WARM_UP):
                    run(i)
        seconds = time_steps(run, warm_up, steps, device)
    images = (steps - WARM_UP) * len(data[0][1])
    return {"name": name, "rate": images / seconds, "state": {k: v.detach().cpu().clone()
                                                              for k, v in model.state_dict().items()}}


def difference(a: dict, b: dict) -> str:
    """'identical', or the largest absolute difference between two state dicts."""
    if all(torch.equal(a[k], b[k]) for k in a):
        return "bit-identical"
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    return f"differs, up to {worst:.1e}"


def inference_rates(device: torch.device, precision: str, batch: int, image_size: int, repeats: int) -> dict:
    """Images a second of the eval forward pass at 1x, 2x and 4x the training batch."""
    model, _ = fresh(device)
    model.eval()
    rates = {}
    for size in (batch, 2 * batch, 4 * batch):
        x = normalize(torch.randint(0, 256, (size, 3, image_size, image_size), dtype=torch.uint8).to(device))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast(device, precision):
            model(x)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                model(x)
            synchronize(device)
        rates[size] = repeats * size / (time.perf_counter() - start)
    return rates


def second_shape(device: torch.device, precision: str, data: list, last: int) -> tuple[float, float]:
    """(seconds of the first step at `last` images, after WARM_UP steps at the full batch; of
    the second one): what an epoch's short last batch costs the first time it comes."""
    model, optimizer = fresh(device)
    step = make_step(model, optimizer, device, precision)
    for i in range(WARM_UP):
        images, labels = data[i % len(data)]
        step(prepared(images), labels)
    times = []
    for i in range(2):
        images, labels = data[i % len(data)]
        synchronize(device)
        start = time.perf_counter()
        step(prepared(images[:last]), labels[:last])
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def read_inputs(folder: Path) -> None:
    """What a training stage reads before it trains: a state dict, and a digest of its input
    bytes (the resume key: about a second for the real decoded train split)."""
    torch.load(folder / "state.pt", weights_only=True)
    file_digest(folder / "inputs.bin")


def probe_device_start(mode: str, folder: Path, device: torch.device) -> float:
    """In this fresh process: seconds to read the inputs and have `device` started, one after
    the other (`serial`) or at once (`overlapped`, as the stages do). On the CPU there is
    nothing to start: that run only shows the probe works."""
    started = time.perf_counter()
    if mode == "overlapped":
        with device_starting(lambda: device):
            read_inputs(folder)
    else:
        read_inputs(folder)
        torch.zeros(1, device=device)
    synchronize(device)
    return time.perf_counter() - started


def device_start_figures(device: torch.device, repeats: int, mib: int) -> str:
    """Median seconds of each way, each run in a new process, the two ways taking turns."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model, _ = fresh(torch.device("cpu"))
        torch.save(model.state_dict(), folder / "state.pt")
        (folder / "inputs.bin").write_bytes(torch.randint(0, 256, (mib << 20,), dtype=torch.uint8).numpy().tobytes())
        times: dict[str, list[float]] = {"serial": [], "overlapped": []}
        for _ in range(repeats):
            for mode in times:
                done = subprocess.run([sys.executable, "-m", "benchmarks.step", "--probe-device-start", mode, tmp,
                                       str(device)], capture_output=True, text=True, check=True)
                times[mode].append(float(done.stdout.strip().splitlines()[-1]))
    serial, overlapped = (statistics.median(times[m]) for m in ("serial", "overlapped"))
    alone = ", ".join(f"{t:.2f}" for t in times["serial"])
    return (f"Reading a stage's inputs (a ResNet-18 state dict and a {mib} MiB digest) and starting {device.type}, in new "
            f"processes, median of {repeats}: {serial:.2f} s one after the other ({alone}), {overlapped:.2f} s at "
            f"once ({', '.join(f'{t:.2f}' for t in times['overlapped'])}).")


def measure(args) -> list[str]:
    device = pick_device(args.device)
    started = time.perf_counter()
    if device.type == "cuda":  # the first CUDA work in this process: what each CUDA stage pays once
        torch.empty(1, device=device)
        synchronize(device)
    cuda_start = time.perf_counter() - started
    precision = pick_precision(args.precision, device)
    data = batches(4, args.batch_size, args.image_size, device)
    names = ["project", "fused", "nondeterministic"] + (["graph", "autotuner"] if device.type == "cuda" else [])
    results, failed = [], []
    for name in names:
        print(f"step: {name} ...", flush=True)
        try:
            results.append(candidate(name, device, precision, data, args.steps))
        except Exception as err:  # noqa: BLE001  a candidate that cannot run is a finding, not the end of the run
            if name == "project":
                raise
            failed.append(f"| {name} | failed | | {type(err).__name__}: {str(err).splitlines()[0][:200]} |")
    base = results[0]
    lines = [f"Machine: {machine()}. {device.type}, {precision}, batch {args.batch_size}, {args.image_size} px, "
             f"{args.steps} steps ({WARM_UP} of them warm-up, untimed) on 4 fixed batches.", "",
             "| step | img/s | vs the project's | weights after the steps, vs the project's |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['rate']:,.1f} | {r['rate'] / base['rate']:.2f}x | "
              f"{'(itself)' if r is base else difference(base['state'], r['state'])} |" for r in results]
    lines += failed
    if device.type != "cuda":
        lines.append("| graph, autotuner | | | CUDA only: not run here |")
    # The repeat of the project's own step: a candidate can only be as identical as that is.
    again = candidate("project", device, precision, data, args.steps)
    lines += ["", f"The project's step run again: {difference(base['state'], again['state'])}; "
                  f"{again['rate']:,.1f} img/s."]
    rates = inference_rates(device, precision, args.batch_size, args.image_size, args.repeats)
    lines.append("Inference (eval mode), img/s: " + ", ".join(f"batch {b}: {r:,.1f}" for b, r in rates.items()) + ".")
    last = args.last or max(1, args.batch_size * 5 // 8)
    first, second = second_shape(device, precision, data, last)
    lines.append(f"A second shape ({last} images after {args.batch_size}): its first step took {first * 1000:.1f} ms, "
                 f"its second {second * 1000:.1f} ms.")
    if device.type == "cuda":
        lines.append(f"CUDA's start in this process (its context and a first allocation): {cuda_start:.2f} s.")
    repeats = args.start_repeats if args.start_repeats is not None else 3 if device.type == "cuda" else 0
    if repeats:
        lines.append(device_start_figures(device, repeats, args.start_mib))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=40, help=f"steps per candidate, the first {WARM_UP} untimed")
    parser.add_argument("--repeats", type=int, default=10, help="forward passes per inference batch size")
    parser.add_argument("--last", type=int, help="the short batch's size (default: 5/8 of the batch, as 80 of 128)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--record", action="store_true", help="append the figures to --results")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--start-repeats", type=int,
                        help="new processes per way of starting the device beside reading (default: 3 on CUDA, "
                             "none on the CPU, where there is nothing to start)")
    parser.add_argument("--start-mib", type=int, default=256,
                        help="the input bytes those processes digest (the real decoded train split: about 500 MiB)")
    parser.add_argument("--probe-device-start", nargs=3, metavar=("MODE", "FOLDER", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_device_start:  # one run for device_start_figures, in a process of its own
        mode, folder, device = args.probe_device_start
        print(f"{probe_device_start(mode, Path(folder), torch.device(device)):.4f}")
        return
    if args.steps <= WARM_UP:
        sys.exit(f"error: step: --steps must be more than the {WARM_UP} warm-up steps")
    lines = measure(args)
    print("\n".join(lines))
    if args.record:
        command = "python -m benchmarks.step " + shlex.join(argv if argv is not None else sys.argv[1:])
        with open(args.results, "a") as f:
            f.write(f"\n### {datetime.date.today().isoformat()}: {command.strip()}\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
