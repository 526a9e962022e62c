"""Using the trained models on new photos: files, folders and http(s) URLs, in batches,
through exactly the evaluate stage's test transform; each model answers with its own class
names and every class's probability. The `hotdog predict` command, the hotdog-predict flow
and the demo page (hotdog.serving.demo) all call this module.

A problem with one image (missing, unreadable, not an image, an unreachable URL) is an
Answer with an `error` for that image; the others still get theirs.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import pickle
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import torch
from PIL import Image
from torch import nn

from hotdog.core.errors import StageError
from hotdog.core.names import RUNS
from hotdog.core.params import PARAMS_FILE, read_params
from hotdog.core.schema import SCORED, write_table
from hotdog.data.decode import rgb_pixels
from hotdog.data.photo import aspect_problem
from hotdog.data.sizes import eval_resize
from hotdog.data.transforms import as_tensor, eval_view
from hotdog.model.hardware import pick_device, pick_precision
from hotdog.model.inference import forward, load_trained
from hotdog.model.torchfile import ZIP_MAGIC
from hotdog.serving.sources import ImageError, Unusable, expand, is_url, read_file, read_url

BATCH_SIZE = 64
# Threads reading and transforming images while the model runs (PIL and torch release the
# GIL). On a GPU they are the bottleneck: 4 of them fed an H200 159 img/s (RESULTS.md).
LOADERS = min(16, os.cpu_count() or 1)
CHECKPOINT, TORCHSCRIPT = "checkpoint", "TorchScript"  # what a --model file holds (file_kind)


class Answer(NamedTuple):
    """One model's answer for one image, or why there is none."""

    source: str  # the path or URL, as given or as found in a folder
    model: str
    classes: tuple[str, ...]  # the model's classes, in label order
    predicted: int | None  # index into classes
    probabilities: tuple[float, ...] | None  # every class's, in label order
    error: str | None = None

    @property
    def class_name(self) -> str | None:
        return None if self.predicted is None else self.classes[self.predicted]

    @property
    def confidence(self) -> float | None:
        """The probability of the predicted class."""
        return None if self.probabilities is None else self.probabilities[self.predicted]

    def top(self, k: int) -> list[tuple[str, float]]:
        """The k most probable classes (all of them when k >= N) as (name, probability), most
        probable first; ties in label order. Empty for an image not scored."""
        if self.probabilities is None:
            return []
        order = sorted(range(len(self.classes)), key=lambda i: (-self.probabilities[i], i))
        return [(self.classes[i], self.probabilities[i]) for i in order[:k]]

    def as_json(self, k: int) -> dict:
        """The answer as `hotdog predict --json` and the demo page send it: the top k, and
        every class's probability by name."""
        scored = self.probabilities is not None
        return {"path": self.source, "model": self.model, "class": self.class_name, "confidence": self.confidence,
                "top_k": [{"class": name, "probability": p} for name, p in self.top(k)] if scored else None,
                "probabilities": dict(zip(self.classes, self.probabilities)) if scored else None,
                "error": self.error}


@dataclass
class Model:
    """A trained model, ready to run, the test-view size its checkpoint was trained at, and
    its classes."""

    name: str  # finetune, scratch, or the checkpoint's path
    module: nn.Module | None  # None for an exported file, which `session` or `scripted` runs
    image_size: int
    classes: tuple[str, ...]  # the checkpoint's, in label order
    session: Any = None  # an onnxruntime session: the forward pass without torch
    scripted: Any = None  # a TorchScript module: uint8 views in, probabilities out


# ------------------------------------------------------------------ models


def checkpoint_path(spec: str, params_file: Path = PARAMS_FILE) -> tuple[str, Path]:
    """(name, path) for `finetune`, `scratch` (paths.models in params.yaml) or a checkpoint path."""
    if spec not in RUNS:
        return spec, Path(spec)
    if not params_file.exists():
        raise StageError(f"no {params_file} here to find the {spec} model in: run this from the project's root, "
                         f"or pass a checkpoint path")
    return spec, read_params(params_file).paths.checkpoint(spec)


def load_model(spec: str, device: torch.device, params_file: Path = PARAMS_FILE) -> Model:
    """A model for `spec` on `device`, loaded once: a checkpoint with weights_only=True, an export
    (.onnx, TorchScript) by its own runtime."""
    name, path = checkpoint_path(spec, params_file)
    if not path.exists():
        fix = (f"train it with `make run` (or `dvc repro {spec}`), or fetch it with `dvc pull`"
               if spec in RUNS else "check the path, or pass --model finetune or scratch")
        raise StageError(f"no model at {path}; {fix}")
    if path.suffix == ".onnx":
        return load_onnx(name, path)
    kind = file_kind(path)
    if kind == TORCHSCRIPT:
        return load_torchscript(name, path, device)
    if kind != CHECKPOINT:
        raise StageError(f"{path} is not a model (neither a torch checkpoint nor an ONNX or TorchScript file); "
                         f"pass models/<run>.pt, models/<run>.onnx or models/<run>.torchscript.pt, or --model "
                         f"finetune or scratch")
    module, params, classes = load_trained(path, "pass a checkpoint written by the finetune or scratch stage")
    size = params.get("train", {}).get("image_size") if isinstance(params, dict) else None
    if not isinstance(size, int):
        raise StageError(f"checkpoint {path} does not record train.image_size; "
                         f"pass a checkpoint written by the finetune or scratch stage")
    return Model(name, module.to(device, memory_format=torch.channels_last).eval(), size, classes)


def file_kind(path: Path) -> str | None:
    """CHECKPOINT or TORCHSCRIPT by what a file holds, whatever its name; None for neither.
    TorchScript goes to torch.jit.load, as torch.load(weights_only=True) refuses it, and a
    file of neither kind is said to be so, not explained by torch's unpickler."""
    try:
        with path.open("rb") as f:
            head = f.read(len(ZIP_MAGIC))
    except OSError as err:
        raise StageError(f"cannot read {path} ({err.strerror}); pass a model file") from None
    if head[:1] == pickle.PROTO:  # torch.save's legacy format (or another pickle): torch.load says which
        return CHECKPOINT
    if head != ZIP_MAGIC:
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            # torch.save and torch.jit.save both write their records under one folder, and
            # constants.pkl is how torch itself tells TorchScript apart.
            records = {name.split("/", 1)[-1] for name in zf.namelist()}
    except zipfile.BadZipFile:  # a torn checkpoint: torch.load says what is wrong with it
        return CHECKPOINT
    return TORCHSCRIPT if "constants.pkl" in records else CHECKPOINT if "data.pkl" in records else None


def load_torchscript(name: str, path: Path, device: torch.device) -> Model:
    """A model the export stage wrote as TorchScript, run in fp32 (as it was checked against
    its checkpoint) on `device`; its classes and input size come from its hotdog.json."""
    fix = "pass a file the export stage wrote (models/<run>.torchscript.pt)"
    extra = {"hotdog.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation note: it still runs everywhere torch does
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        if not extra["hotdog.json"]:
            raise ValueError("it holds no hotdog.json")
        meta = json.loads(extra["hotdog.json"])
        classes, size = tuple(json.loads(meta["classes"])), int(meta["image_size"])
    except Exception as err:  # a foreign or torn file fails in many ways
        said = " ".join(str(err).split())[:120]  # torch's messages run over many lines
        raise StageError(f"{path} is not a TorchScript model with hotdog's metadata ({type(err).__name__}: "
                         f"{said}); {fix}") from None
    return Model(name, None, size, classes, scripted=module.eval())


def load_onnx(name: str, path: Path) -> Model:
    """A model the export stage wrote as ONNX, run by onnxruntime on the CPU; its classes and
    input size come from the file's own metadata."""
    from hotdog.model.export import onnx_metadata, onnx_session

    fix = "pass a file the export stage wrote (models/<run>.onnx)"
    try:
        meta = onnx_metadata(path)
        classes, size = tuple(json.loads(meta["classes"])), int(meta["image_size"])
    except Exception as err:  # a foreign or torn file fails in many ways
        raise StageError(f"{path} is not an ONNX model with hotdog's metadata ({type(err).__name__}: "
                         f"{str(err)[:120]}); {fix}") from None
    return Model(name, None, size, classes, onnx_session(path))


def pick_runtime(device_name: str, precision_name: str) -> tuple[torch.device, str]:
    """(device, precision) for `auto`, `cpu` or `cuda`, and `auto`, `fp32` or `bf16`."""
    if device_name == "cuda" and not torch.cuda.is_available():
        raise StageError("--device cuda, but torch sees no CUDA device; pass --device auto or cpu")
    device = pick_device(device_name)
    return device, pick_precision(precision_name, device)


# ------------------------------------------------------------------ views


def test_view(data: bytes, size: int) -> torch.Tensor:
    """The evaluate stage's view of an encoded image: RGB, shorter side resized as the decode
    stage does, then transforms.eval_view (squash and centre crop): uint8 CHW, size x size."""
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only: the size, no pixels yet
            if problem := aspect_problem(*img.size):  # else the resize would take gigabytes
                raise ImageError(problem)
            pixels = rgb_pixels(img, eval_resize(size))
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"too many pixels to decode safely ({err}); shrink it first") from None
    except Exception as err:  # PIL raises many types for bad input
        what = ("not an image PIL can read" if isinstance(err, Image.UnidentifiedImageError)
                else f"does not decode ({type(err).__name__}: {err})")
        raise ImageError(f"{what}; pass a JPEG, PNG, GIF, BMP, TIFF or WebP photo") from None
    return eval_view(as_tensor(pixels).permute(2, 0, 1), size)


def views_of(source: str, sizes: set[int]) -> dict[int, torch.Tensor]:
    """The test view of one image at each size the models need."""
    data = read_url(source) if is_url(source) else read_file(Path(source))
    return {size: test_view(data, size) for size in sizes}


# ------------------------------------------------------------------ scoring


def run_model(model: Model, views: torch.Tensor, device: torch.device,
              precision: str) -> list[tuple[int, tuple[float, ...]]]:
    """(predicted class, every class's probability) for a batch of test views, as the
    evaluate stage derives them from the logits."""
    if model.session is not None:
        from hotdog.model.export import onnx_probabilities

        probabilities = torch.from_numpy(onnx_probabilities(model.session, views.numpy()))
    elif model.scripted is not None:
        with torch.inference_mode():  # the file holds the normalisation and the softmax
            probabilities = model.scripted(views.to(device)).float()
    else:
        probabilities = forward(model.module, views, device, precision).softmax(1)
    return list(zip(probabilities.argmax(1).tolist(), map(tuple, probabilities.tolist())))


def score_views(models: list[Model], source: str, views: dict[int, torch.Tensor], device: torch.device,
                precision: str) -> list[Answer]:
    """Every model's answer for one image already transformed (the demo page's path)."""
    answers = []
    for model in models:
        [(predicted, probs)] = run_model(model, views[model.image_size][None], device, precision)
        answers.append(Answer(source, model.name, model.classes, predicted, probs))
    return answers


def score_bytes(models: list[Model], source: str, data: bytes, device: torch.device,
                precision: str) -> list[Answer]:
    """Every model's answer for one encoded image; an ImageError if it is not one."""
    views = {size: test_view(data, size) for size in {m.image_size for m in models}}
    return score_views(models, source, views, device, precision)


def _load(source: str, sizes: set[int]) -> dict[int, torch.Tensor] | str:
    """The views of one image, or why there are none."""
    try:
        return views_of(source, sizes)
    except ImageError as err:
        return str(err)
    except Exception as err:  # a bug reading one image must not lose every other answer
        said = " ".join(str(err).split())[:200]  # on one line, as every error
        return f"could not be read ({type(err).__name__}: {said}); check it, and report this error if the image is fine"


def score(models: list[Model], items: Iterable[str | Unusable], device: torch.device, precision: str,
          batch_size: int = BATCH_SIZE, on_batch: Callable[[int], None] | None = None) -> Iterator[Answer]:
    """Every model's answer for every item of expand(inputs), in order, `batch_size` images
    per forward pass. Images are read and transformed on threads while the previous batch
    runs. `on_batch` gets the number of items each batch held, for a progress bar."""
    sizes = {m.image_size for m in models}
    items = iter(items)
    with ThreadPoolExecutor(LOADERS) as pool:
        def submit() -> list:
            batch = list(itertools.islice(items, batch_size))
            return [item if isinstance(item, Unusable) else (item, pool.submit(_load, item, sizes)) for item in batch]

        pending = submit()
        while pending:
            current, pending = pending, submit()  # the next batch loads while this one runs
            loaded = [(item, None) if isinstance(item, Unusable) else (item[0], item[1].result()) for item in current]
            good = [(source, views) for source, views in loaded if isinstance(views, dict)]
            results = {m.name: run_model(m, torch.stack([v[m.image_size] for _, v in good]), device, precision)
                       for m in models} if good else {}
            at = 0
            for item, views in loaded:
                if isinstance(item, Unusable):
                    yield from (Answer(item.source, m.name, m.classes, None, None, item.error) for m in models)
                elif isinstance(views, str):
                    yield from (Answer(item, m.name, m.classes, None, None, views) for m in models)
                else:
                    yield from (Answer(item, m.name, m.classes, *results[m.name][at]) for m in models)
                    at += 1
            if on_batch:
                on_batch(len(current))


def table(answers: list[Answer]) -> pa.Table:
    """Answers as a SCORED table (hotdog.core.schema), in the given order."""
    return pa.table({
        "path": [a.source for a in answers],
        "model": [a.model for a in answers],
        "predicted": [a.predicted for a in answers],
        "class_name": [a.class_name for a in answers],
        "confidence": [a.confidence for a in answers],
        "classes": [list(a.classes) for a in answers],
        "probabilities": [None if a.probabilities is None else list(a.probabilities) for a in answers],
        "error": [a.error for a in answers],
    }, schema=SCORED)


def summary(answers: list[Answer], extremes: int = 10) -> tuple[list[dict], list[dict]]:
    """(images per predicted class and model, errors included; the `extremes` most and least
    confident answers of each model), as rows for a table artifact or a report."""
    counts: dict[tuple[str, str], int] = {}
    for a in answers:
        key = (a.model, a.class_name or "error")
        counts[key] = counts.get(key, 0) + 1
    count_rows = [{"model": model, "class": name, "images": n} for (model, name), n in sorted(counts.items())]
    extreme_rows = []
    for model in dict.fromkeys(a.model for a in answers):
        scored = sorted((a for a in answers if a.model == model and a.error is None),
                        key=lambda a: (-a.confidence, a.source))
        picks = [("most", a) for a in scored[:extremes]] + [("least", a) for a in scored[::-1][:extremes]]
        extreme_rows += [{"model": model, "confidence": which, "image": a.source, "class": a.class_name,
                          "probability": round(a.confidence, 4)} for which, a in picks]
    return count_rows, extreme_rows


# ------------------------------------------------------------------ the command


def main(argv: list[str] | None = None) -> None:
    """hotdog predict: one line per image and model (path, model, top classes and their
    probabilities), or JSON lines, and Parquet."""
    parser = argparse.ArgumentParser(
        prog="hotdog predict", description="Classify photos with the trained models, by the classes each was "
        "trained on. Prints one line per image and model: its path, the model, and the most probable class "
        "with its probability (the top K with --top-k K). Exits with 1 when some image could not be scored "
        "(its error line says why).")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE",
                        help="image files, folders (searched recursively) or http(s) URLs")
    parser.add_argument("--model", action="append", metavar="M",
                        help="finetune (the default), scratch, a checkpoint path, or a file the export stage "
                             "wrote: .onnx (run by onnxruntime on the CPU, without torch) or .torchscript.pt "
                             "(run in fp32); repeat for several")
    parser.add_argument("--top-k", type=int, default=1, metavar="K",
                        help="print the K most probable classes of each answer (default 1; all when K >= the "
                             "model's number of classes)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per image and model: the top K and every class's probability")
    parser.add_argument("--out", type=Path, metavar="FILE.parquet", help="also write every answer to a Parquet file")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="auto: bf16 where the hardware runs it natively, as the evaluate stage")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, metavar="N")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    if args.out is not None and args.out.suffix != ".parquet":
        parser.error(f"--out {args.out}: name a .parquet file")
    try:
        device, precision = pick_runtime(args.device, args.precision)
        models = [load_model(spec, device) for spec in dict.fromkeys(args.model or ["finetune"])]
        answers = print_answers(args, models, device, precision)
        if args.out is not None:
            write_answers(answers, args.out)
    except StageError as err:
        sys.exit(f"error: predict: {err}")
    except BrokenPipeError:  # `hotdog predict ... | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    if any(a.error for a in answers):
        sys.exit(1)


def print_answers(args: argparse.Namespace, models: list[Model], device: torch.device,
                  precision: str) -> list[Answer]:
    """Score args.inputs, printing each answer as it comes and each failed image's error
    once; with a progress bar on a terminal when there is more than one batch."""
    items = list(expand(args.inputs))
    bar = None
    if sys.stderr.isatty() and len(items) > args.batch_size:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="img", desc="predict", file=sys.stderr)
    stdout_open = True

    def say(text: str, file=None) -> None:
        nonlocal stdout_open
        file = file or sys.stdout
        if file is sys.stdout and not stdout_open:
            return
        if not emit(text, file, bar) and file is sys.stdout:
            stdout_open = False

    answers, failed = [], set()
    for a in score(models, items, device, precision, args.batch_size, bar.update if bar else None):
        answers.append(a)
        if a.error is not None and a.source not in failed:  # once per image, not per model
            failed.add(a.source)
            say(f"error: {a.source}: {a.error}", file=sys.stderr)
        if args.json:
            say(json.dumps(a.as_json(args.top_k)))
        elif a.error is None:
            say(line(a, args.top_k))
        if not stdout_open and args.out is None:
            break  # nobody reads the rest; with --out, the file still gets every answer
    if bar:
        bar.close()
    return answers


def emit(text: str, file, bar=None) -> bool:
    """Print a line and flush it (through tqdm's `bar` when one is shown); False when the reader
    has gone (`| head`, or `2>&1 | head`). The stream is then pointed at /dev/null, so that
    nothing fails at exit either, and the command goes on: --out still gets every answer."""
    try:
        if bar is not None:
            bar.write(text, file=file)
        else:
            print(text, file=file)
        file.flush()
        return True
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), file.fileno())
        return False


def line(answer: Answer, k: int) -> str:
    """The plain output for one answer: path, model and the top k, e.g.
    `lunch.jpg<TAB>finetune<TAB>hotdog 0.973, not-hotdog 0.027`."""
    top = ", ".join(f"{name} {p:.3f}" for name, p in answer.top(k))
    return "\t".join([answer.source, answer.model, top])


def write_answers(answers: list[Answer], dest: Path) -> None:
    """Every answer as a SCORED Parquet file, written atomically."""
    try:
        write_table(table(answers), dest, SCORED)
    except OSError as err:
        raise StageError(f"cannot write {dest} ({err.strerror}); pass another --out") from None
    emit(f"wrote {len(answers)} answers to {dest}", sys.stderr)
