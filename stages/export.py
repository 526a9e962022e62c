"""DVC stage `export`: each trained model as ONNX (models/<run>.onnx, for onnxruntime) and
TorchScript (models/<run>.torchscript.pt), checked against its checkpoint on the test views
before anything is written (hotdog.model.export); the gaps go to metrics/export.json.
Run from the repo root: python -m stages.export
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hotdog.core import events
from hotdog.core.files import atomic_path, file_digest, write_json
from hotdog.core.names import RUNS
from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.runner.stage import run_main

PARAMS = ("train.image_size",)


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [*(paths.onnx(run) for run in RUNS), *(paths.torchscript(run) for run in RUNS), paths.export_summary]


def main() -> None:
    # torch and all that uses it are imported here, once the stage has said it started.
    from hotdog.data.transforms import read_eval_views
    from hotdog.model.export import export_checked
    from hotdog.model.inference import load_trained

    events.mark("imported")
    p = load_params(*PARAMS)
    views, _, classes = read_eval_views(p.paths.decoded_file("test"), p.train.image_size)
    data_sha1 = file_digest(p.paths.zip, "sha1")
    models = {run: load_trained(p.paths.checkpoint(run), f"run `dvc repro {run}`") for run in RUNS}
    events.mark("ready")  # no device to start: the exports are made and checked on the CPU
    summary = {}
    # Every file is written to a temporary name, and all are renamed only once every export
    # has matched its checkpoint: a mismatch leaves none of them.
    with contextlib.ExitStack() as files:
        for run in RUNS:
            onnx, torchscript = (files.enter_context(atomic_path(dest))
                                 for dest in (p.paths.onnx(run), p.paths.torchscript(run)))
            summary[run] = export_checked(run, models[run], views.views, classes, p.train.image_size, data_sha1,
                                          onnx, torchscript)
            print(f"{run}: ONNX and TorchScript match the checkpoint to {summary[run]['onnx']['max_abs_diff']:.1e} "
                  f"and {summary[run]['torchscript']['max_abs_diff']:.1e} on {summary[run]['onnx']['images']} of the "
                  f"{len(views.views)} test images",
                  flush=True)
        write_json(p.paths.export_summary, summary)


if __name__ == "__main__":
    run_main("export", main)
