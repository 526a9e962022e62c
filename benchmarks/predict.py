"""How fast the trained model is used (issue #13): `hotdog predict` over a folder of
photo-sized images against a loop of one forward pass per image, and the demo page's
latency for one upload after warm-up. Prints a table; --record appends it to RESULTS.md.

Run: python -m benchmarks.predict [--images 1000] [--record]
The model is a random two-class ResNet-18 saved as the training stages save theirs (speed
does not depend on the weights); the images come from `hotdog make-data` (about 500x375 PNG).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from benchmarks.bench import RESULTS, machine
from hotdog.core.names import CLASSES
from hotdog.data.transforms import EvalViews
from hotdog.model import inference
from hotdog.model.checkpoint import save_checkpoint
from hotdog.model.resnet import build_model
from hotdog.serving import predict, sources

# The `hotdog` command, through the interpreter running this: no installed script needed.
HOTDOG = [sys.executable, "-m", "hotdog.cli"]


def make_inputs(work: Path, images: int, size: int) -> tuple[Path, Path]:
    """(a folder of `images` photo-sized PNGs, a checkpoint trained at `size`)."""
    subprocess.run([*HOTDOG, "make-data", str(work / "photos"), "--train", str(images // 2), "--test", "0"],
                   check=True, stdout=subprocess.DEVNULL)
    torch.manual_seed(0)
    checkpoint = work / "model.pt"
    save_checkpoint(checkpoint, build_model(None, "default", CLASSES).state_dict(), "finetune",
                    {"seed": 0, "train": {"image_size": size}}, {}, CLASSES)
    return work / "photos", checkpoint


def time_command(folder: Path, checkpoint: Path, batch_size: int, out: Path) -> float:
    """Seconds for `hotdog predict FOLDER --model CHECKPOINT --out OUT`, start to exit."""
    start = time.perf_counter()
    subprocess.run([*HOTDOG, "predict", str(folder), "--model", str(checkpoint), "--batch-size",
                    str(batch_size), "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_in_process(model: predict.Model, files: list[str], device: torch.device, precision: str,
                    batch_size: int) -> float:
    """Seconds for predict.score over the files, the model already loaded."""
    start = time.perf_counter()
    answers = list(predict.score([model], files, device, precision, batch_size))
    assert all(a.error is None for a in answers)
    return time.perf_counter() - start


def time_evaluate_stage(model: predict.Model, files: list[str], device: torch.device, precision: str,
                        batch_size: int) -> float:
    """Seconds for what the evaluate stage times: forward passes over test views already
    made (the decode stage made them once, before), `batch_size` at a time."""
    views = torch.stack([predict.test_view(Path(f).read_bytes(), model.image_size) for f in files])
    evals = EvalViews(views.to(device), torch.zeros(len(files), dtype=torch.int64, device=device))
    start = time.perf_counter()
    inference.predict(model.module, evals, batch_size, device, precision)
    return time.perf_counter() - start


def time_one_by_one(model: predict.Model, files: list[str], device: torch.device, precision: str) -> float:
    """Seconds for the naive loop: read, transform and run one image at a time."""
    start = time.perf_counter()
    for file in files:
        view = predict.test_view(Path(file).read_bytes(), model.image_size)
        predict.run_model(model, view[None], device, precision)
    return time.perf_counter() - start


def page_latency(checkpoint: Path, photo: Path, uploads: int, port: int) -> list[float]:
    """Milliseconds per upload of `photo` to a running `hotdog demo`, after 3 warm-up ones."""
    demo = subprocess.Popen([*HOTDOG, "demo", "--model", str(checkpoint), "--port", str(port)],
                            stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "api/health", timeout=2).close()
                break
            except OSError:
                if demo.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("error: benchmarks.predict: hotdog demo did not start") from None
                time.sleep(0.5)
        data = photo.read_bytes()
        times = []
        for i in range(3 + uploads):
            request = urllib.request.Request(base + "api/predict", data=data, method="POST",
                                             headers={"X-Filename": photo.name})
            start = time.perf_counter()
            urllib.request.urlopen(request, timeout=60).read()
            if i >= 3:
                times.append(1000 * (time.perf_counter() - start))
        return times
    finally:
        demo.terminate()
        demo.wait(timeout=30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.predict", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=predict.BATCH_SIZE)
    parser.add_argument("--uploads", type=int, default=20, help="timed uploads to the page, after 3 warm-up ones")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--record", action="store_true", help=f"append the table to {RESULTS}")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="hotdog-predict-bench-") as tmp:
        work = Path(tmp)
        print(f"1/4 writing {args.images} photo-sized images ...", flush=True)
        folder, checkpoint = make_inputs(work, args.images, args.image_size)
        files = [f for f in sources.expand([str(folder)]) if isinstance(f, str)]
        device, precision = predict.pick_runtime("auto", "auto")
        model = predict.load_model(str(checkpoint), device)
        print("2/4 hotdog predict over the folder ...", flush=True)
        command = time_command(folder, checkpoint, args.batch_size, work / "answers.parquet")
        in_process = time_in_process(model, files, device, precision, args.batch_size)
        print("3/4 one forward pass per image, and the evaluate stage's forward passes ...", flush=True)
        one_by_one = time_one_by_one(model, files, device, precision)
        evaluate = time_evaluate_stage(model, files, device, precision, args.batch_size)
        print("4/4 the demo page ...", flush=True)
        latency = page_latency(checkpoint, Path(files[0]), args.uploads, args.port)
        upload_kib = Path(files[0]).stat().st_size / 1024

    n = len(files)
    rows = [
        (f"`hotdog predict FOLDER` (batches of {args.batch_size}), start to exit", n / command, command),
        ("the same, in process (model loaded; `predict.score`)", n / in_process, in_process),
        ("a loop of one forward pass per image (batch 1)", n / one_by_one, one_by_one),
        (f"the evaluate stage's part: forward passes over views made beforehand (batches of {args.batch_size})",
         n / evaluate, evaluate),
    ]
    lines = [f"Machine: {machine()}. {n} photo-sized PNGs (about 500x375), {args.image_size} px, "
             f"{device.type}, {precision}.", "",
             "| | images/sec | seconds |", "|---|---|---|"]
    lines += [f"| {what} | {rate:.1f} | {seconds:.1f} |" for what, rate, seconds in rows]
    lines += ["", f"Batched over one-by-one: **{one_by_one / in_process:.2f}x** in process, "
                  f"{one_by_one / command:.2f}x counting the command's start-up.",
              f"Demo page, one upload of {upload_kib:.0f} KiB after 3 warm-up ones, "
              f"{len(latency)} timed, client round trip: median **{statistics.median(latency):.1f} ms**, "
              f"min {min(latency):.1f}, max {max(latency):.1f}."]
    print("\n".join(lines))
    if args.record:
        today = datetime.date.today().isoformat()
        entry = [f"\n### {today}: python -m benchmarks.predict {' '.join(argv or sys.argv[1:])}\n", *lines]
        with args.results.open("a") as f:
            f.write("\n".join(entry) + "\n")
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
