"""DVC stage `evaluate`: run both checkpoints once over the test split (params: the train
keys that decide how a model is run). Writes metrics/evaluate.json (per model: accuracy,
balanced accuracy, the majority baseline, per-class precision/recall/F1, the confusion,
ROC-AUC, top-5 past five classes, calibration error, mean loss) and
metrics/predictions.parquet. Run from the repo root: python -m stages.evaluate
"""

from __future__ import annotations

from pathlib import Path

from hotdog.core import events
from hotdog.core.files import write_json
from hotdog.core.names import RUNS
from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.core.schema import PREDICTIONS, write_table
from hotdog.runner.stage import run_main

PARAMS = ("train.image_size", "train.batch_size", "train.device", "train.precision")


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.evaluation, paths.predictions, *(paths.confusion(run) for run in RUNS)]


def main() -> None:
    # torch and all that uses it are imported here, once the stage has said it started.
    from hotdog.data.transforms import read_eval_views
    from hotdog.evaluation.evaluate import evaluate, write_confusion
    from hotdog.model.hardware import device_starting, pick_device
    from hotdog.model.inference import load_trained

    events.mark("imported")
    p = load_params(*PARAMS)
    with device_starting(lambda: pick_device(p.train.device)):  # CUDA starts while the checkpoints load
        models = {run: load_trained(p.paths.checkpoint(run), f"run `dvc repro {run}`") for run in RUNS}
    events.mark("ready")
    # The views are passed without a name here: evaluate() moves them to the device, and on
    # a GPU no host copy should outlive that.
    metrics, predictions = evaluate(models, *read_eval_views(p.paths.decoded_file("test"), p.train.image_size),
                                    p.train.batch_size, p.train.device, p.train.precision)
    events.mark("writing")
    write_table(predictions, p.paths.predictions, PREDICTIONS)
    write_json(p.paths.evaluation, metrics)
    for run in RUNS:
        write_confusion(predictions, run, p.paths.confusion(run))
    for run, m in metrics.items():
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        print(f"{run}: test acc {m['accuracy']:.3f}, loss {m['loss']:.3f}, ROC-AUC {auc} "
              f"on {m['images']} images", flush=True)


if __name__ == "__main__":
    run_main("evaluate", main)
