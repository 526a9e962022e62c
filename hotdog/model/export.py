"""A trained model as files that run without this project: ONNX (onnxruntime, any language)
and TorchScript (torch alone), each checked against the checkpoint before it is written.

Both take what the evaluate stage feeds the model, the test view of an image (uint8 RGB,
NCHW, image_size square: the shorter side resized to the test resize, then squashed to a
square of that side, then centre-cropped; metadata's `input` spells it out), and answer
every class's probability. The ImageNet normalisation and the softmax are inside,
so a caller only resizes and crops. Each file carries its metadata: the classes, the input,
the normalisation, and the params and data digest it came from.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from hotdog.core.errors import StageError
from hotdog.data.sizes import eval_resize
from hotdog.data.transforms import IMAGENET_MEAN, IMAGENET_STD, imagenet_stats, normalize
from hotdog.model.inference import Trained

OPSET = 18  # torch's exporter's default; onnxruntime runs it
TOLERANCE = 1e-4  # the largest gap in any probability between the checkpoint and an export
# The most test views each export is checked on. Three fp32 CPU passes (torch, onnxruntime,
# TorchScript) for each model are most of the stage: on a 2-core Xeon at 224 px, 800 views
# would take about 100 s, and 128 took 15 s of the stage's 19 s. Every view goes through
# every op of the graph, so a conversion that goes wrong (an op, a layout, a constant) shows
# on any of them; 32 spread over the split, in one batch, find it as the whole split would.
PARITY_VIEWS = 32
META_PREFIX = "hotdog."


class Deployable(nn.Module):
    """The model as deployed: uint8 test views in, class probabilities out. The normalisation
    constants are buffers, so the TorchScript file follows `.to(device)` like any module
    (made inside forward, a trace would freeze them to the CPU it ran on)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        mean, std = imagenet_stats()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(views, self.mean, self.std)).softmax(1)


def metadata(run: str, classes: Sequence[str], image_size: int, params: dict, data_sha1: str) -> dict[str, str]:
    """What a deployed model must say about itself, as strings (ONNX metadata_props)."""
    resize = eval_resize(image_size)
    return {
        "run": run,
        "classes": json.dumps(list(classes)),
        # Every step, in order: a caller who skips the squash gets other pixels from any photo
        # that is not square (hotdog.data.decode.rgb_pixels, then transforms.eval_view).
        "input": (f"uint8 RGB NCHW, {image_size}x{image_size}; any batch size. From a photo: turn it upright by "
                  f"its EXIF orientation, convert to RGB, resize its shorter side to {resize} px (bilinear, the "
                  f"longer side scaled and rounded down), resize that to {resize}x{resize} (bilinear, "
                  f"antialiased: the aspect ratio is not kept, as in d2l's test transform), then centre-crop "
                  f"{image_size}x{image_size}"),
        "output": "float32 probabilities, one per class in the order of `classes`",
        "image_size": str(image_size),
        "normalisation": json.dumps({"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "scale": 1 / 255}),
        "params": json.dumps(params, sort_keys=True),
        "data_sha1": data_sha1,
    }


def torch_probabilities(model: nn.Module, views: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """The checkpoint's own probabilities for uint8 views, fp32 on the CPU: the reference."""
    deployable = Deployable(model).eval()
    with torch.inference_mode():
        return torch.cat([deployable(views[i:i + batch_size]) for i in range(0, len(views), batch_size)]).numpy()


def to_onnx(model: nn.Module, image_size: int, meta: dict[str, str], dest: Path) -> None:
    """Export to ONNX at `dest`: a dynamic batch dimension, opset OPSET, `meta` as metadata.

    torch's TorchScript-based exporter (dynamo=False): 0.8 to 1.3 s a model here, against
    2.7 to 6 s for the torch.export-based one, which also imports torch._dynamo and onnxscript
    into the stage (benchmarks/RESULTS.md). torch has deprecated it; tests/test_export.py
    fails the day it goes, and the other is a one-line change (dynamo=True, dynamic_shapes).
    """
    import onnx

    deployable = Deployable(model).eval()
    example = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes
        torch.onnx.export(deployable, (example,), str(dest), input_names=["images"], output_names=["probabilities"],
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}})
    proto = onnx.load(str(dest))
    for key, value in meta.items():
        proto.metadata_props.add(key=META_PREFIX + key, value=value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(dest))


def onnx_metadata(path: Path) -> dict[str, str]:
    """An exported file's hotdog metadata."""
    import onnx

    proto = onnx.load(path, load_external_data=False)
    return {p.key.removeprefix(META_PREFIX): p.value for p in proto.metadata_props if p.key.startswith(META_PREFIX)}


def onnx_session(path: Path):
    """An onnxruntime session on the CPU, single-threaded results (deterministic)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_probabilities(session, views: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Probabilities from an onnxruntime session for uint8 NCHW views."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: views[i:i + batch_size]})[0]
                           for i in range(0, len(views), batch_size)])


def to_torchscript(model: nn.Module, image_size: int, meta: dict[str, str], dest: Path) -> None:
    """Trace to TorchScript at `dest`, `meta` as the extra file hotdog.json."""
    example = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation note: it still runs everywhere torch does
        traced = torch.jit.trace(Deployable(model).eval(), example, check_trace=False)
        torch.jit.save(traced, str(dest), _extra_files={"hotdog.json": json.dumps(meta)})


def torchscript_probabilities(path: Path, views: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.inference_mode():
        return torch.cat([module(views[i:i + batch_size]) for i in range(0, len(views), batch_size)]).numpy()


def parity_views(views: torch.Tensor, most: int = PARITY_VIEWS) -> torch.Tensor:
    """Up to `most` of `views`, spread evenly from the first to the last (all when fewer)."""
    if len(views) <= most:
        return views
    return views[torch.linspace(0, len(views) - 1, most).round().long()]


def gap(reference: np.ndarray, other: np.ndarray) -> dict:
    """How far an export's probabilities are from the checkpoint's: the largest difference,
    and how many images change their predicted class."""
    return {"max_abs_diff": float(np.abs(reference - other).max()) if len(reference) else 0.0,
            "argmax_changes": int((reference.argmax(1) != other.argmax(1)).sum()),
            "images": int(len(reference))}


def check_parity(run: str, fmt: str, found: dict, tolerance: float = TOLERANCE) -> None:
    """One line when an export strays from its checkpoint by more than `tolerance`."""
    if found["max_abs_diff"] > tolerance:
        raise StageError(f"the {fmt} export of {run} differs from its checkpoint by up to {found['max_abs_diff']:.2e} "
                         f"in a probability (more than {tolerance:g}) on {found['images']} test views; nothing was "
                         "written; "
                         "report it with the versions of torch, onnx and onnxruntime")


def export_checked(run: str, trained: Trained, views: torch.Tensor, classes: Sequence[str], image_size: int,
                   data_sha1: str, onnx_dest: Path, torchscript_dest: Path) -> dict:
    """Write both exports of one trained model and check each against the checkpoint on
    `views` (the test split; parity_views of it); their gaps, or one line when one strays
    past TOLERANCE."""
    if tuple(trained.classes) != tuple(classes):
        raise StageError(f"the {run} model was trained on the classes {', '.join(trained.classes)}, but the test "
                         f"split holds {', '.join(classes)}; run `dvc repro {run}`")
    trained_size = (trained.params.get("train") or {}).get("image_size")
    if trained_size != image_size:
        raise StageError(f"the {run} model was trained at image_size {trained_size}, not train.image_size "
                         f"{image_size}; run `dvc repro {run}`")
    model = trained.module.float().eval()
    meta = metadata(run, classes, image_size, trained.params, data_sha1)
    views = parity_views(views)
    reference = torch_probabilities(model, views)
    to_onnx(model, image_size, meta, onnx_dest)
    found = {"onnx": gap(reference, onnx_probabilities(onnx_session(onnx_dest), views.numpy()))}
    check_parity(run, "ONNX", found["onnx"])
    to_torchscript(model, image_size, meta, torchscript_dest)
    found["torchscript"] = gap(reference, torchscript_probabilities(torchscript_dest, views))
    check_parity(run, "TorchScript", found["torchscript"])
    return {**found, "opset": OPSET, "tolerance": TOLERANCE, "classes": list(classes)}
