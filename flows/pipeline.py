"""Prefect flow `hotdog-pipeline`: one task per DVC stage, each asking DVC to run it.

DVC stays the record (dvc.lock, cache, metrics), so a flow run and `dvc repro` are
interchangeable. Run once: python -m flows.pipeline [--scratch-lr 1e-3 ...]; serve: make ui
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model
# from real annotations, and a served run cannot resolve string ones.
import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from ruamel.yaml import YAML

from stages.errors import TRANSIENT_EXIT
from stages.params import PARAMS_FILE, RUNS, ParamsError, apply_overrides, read_params
from stages.report import COMPARISON_HEADER, comparison_rows

REPO = Path(__file__).resolve().parents[1]
# The tasks are dvc.yaml's stages, in its order, so the two cannot drift apart.
STAGES = tuple(YAML(typ="safe").load((REPO / "dvc.yaml").read_text())["stages"])
NETWORK_STAGES = ("download", "weights")  # the only ones a retry can help
TRAINING_WEIGHT = 10  # a training stage counts this many times another in the progress bar
# Flow parameter -> params.yaml key; anything else goes through `params`.
PARAMETER_KEYS = {
    "finetune_lr": "finetune.lr", "scratch_lr": "scratch.lr", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "image_size": "train.image_size", "device": "train.device",
    "precision": "train.precision", "augment": "train.augment", "data_url": "data.url",
    "data_sha1": "data.sha1",
}
PLOTS_DIR = "dvc_plots"  # `dvc plots show` writes its HTML here (git-ignored)
_TRAIN_LINE = re.compile(r"^(\w+) epoch (\d+)/(\d+): (?:batch (\d+)/(\d+)|loss )")
# DVC's advice after each stage ("To track the changes with git, run: ..."): true, but
# seven times per run it drowns the stages' own lines, so it goes to the debug level.
_DVC_HINTS = re.compile(r"^\s*(To track the changes with git|git add |To enable auto staging|"
                        r"dvc config core.autostage|Use `dvc push`)")


class StageFailed(RuntimeError):
    """A stage failed; the message is the stage's own error line."""


class StageInterrupted(StageFailed):
    """A stage failed in a way a later try may not (the network); the task retries it."""


def project_dir() -> Path:
    """The DVC project the flow works on: the current directory, as for `dvc` itself."""
    cwd = Path.cwd()
    if not (cwd / "dvc.yaml").is_file() or not (cwd / ".dvc").is_dir():
        raise StageFailed(f"{cwd} is not the hotdog project (no dvc.yaml and .dvc/ there); "
                          "start the flow from the repo root")
    return cwd


def dvc_env() -> dict[str, str]:
    """This interpreter's bin first on PATH: stage commands say `python -m stages.<name>`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def stream_dvc(args: list[str], cwd: Path, on_line: Callable[[str], None]) -> tuple[int, list[str]]:
    """Run `dvc <args>` (no shell), handing each output line to on_line as it arrives."""
    command = [sys.executable, "-m", "dvc", *args]
    lines = []
    with subprocess.Popen(command, cwd=cwd, env=dvc_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for raw in proc.stdout:
            for line in raw.rstrip("\n").split("\r"):  # a bar's redraws become lines
                if line.strip():
                    lines.append(line)
                    on_line(line)
    return proc.returncode, lines


def stage_failure(stage: str, lines: list[str], returncode: int) -> StageFailed:
    """The exception for a failed `dvc repro`, carrying the stage's own message."""
    own = [line for line in lines if line.startswith(f"error: {stage}:")]
    dvc = [line for line in lines if line.startswith("ERROR:")]
    message = (own or dvc or [f"dvc repro {stage} exited with status {returncode}"])[-1]
    transient = any(line.endswith(f"exited with {TRANSIENT_EXIT}") for line in lines)
    return (StageInterrupted if transient else StageFailed)(message)


def training_fraction(line: str) -> float | None:
    """How far a training stage is, from its progress lines; None for other lines."""
    match = _TRAIN_LINE.match(line)
    if not match:
        return None
    epoch, epochs, batch, batches = match.groups()[1:]
    done_in_epoch = int(batch) / int(batches) if batch else 1.0
    return (int(epoch) - 1 + done_in_epoch) / int(epochs)


def stage_spans() -> dict[str, tuple[float, float]]:
    """Each stage's (start, width) in percent of the whole run, training weighted."""
    weights = {s: TRAINING_WEIGHT if s in RUNS else 1 for s in STAGES}
    total, start, spans = sum(weights.values()), 0.0, {}
    for stage in STAGES:
        spans[stage] = (start, 100 * weights[stage] / total)
        start += spans[stage][1]
    return spans


def run_stage(stage: str, progress_id: UUID | None = None) -> bool:
    """Make DVC run `stage` if anything it uses changed; True if it ran."""
    logger = get_run_logger()
    start, width = stage_spans()[stage]

    def on_line(line: str) -> None:
        if line.startswith(("error:", "ERROR:")):
            logger.error(line)
        elif _DVC_HINTS.match(line):
            logger.debug(line)
        else:
            logger.info(line)
        fraction = training_fraction(line)
        if progress_id is not None and fraction is not None:
            update_progress_artifact(progress_id, round(start + width * fraction, 2))

    returncode, lines = stream_dvc(["repro", "--single-item", stage], project_dir(), on_line)
    if returncode != 0:
        raise stage_failure(stage, lines, returncode)
    ran = any(line.startswith(f"Running stage '{stage}'") for line in lines)
    if not ran:
        logger.info(f"{stage}: up to date, not run (nothing it uses changed since dvc.lock)")
    if progress_id is not None:
        update_progress_artifact(progress_id, round(start + width, 2))  # the last one ends at 100
    return ran


def is_interrupted(task, task_run, state) -> bool:
    """Retry condition: only a network failure that outlasted the stage's own retries."""
    return isinstance(state.result(raise_on_failure=False), StageInterrupted)


def stage_task(stage: str):
    """The Prefect task for one stage. No Prefect caching: DVC decides what is stale."""
    options: dict[str, Any] = dict(name=stage, task_run_name=stage, cache_policy=NO_CACHE)
    if stage in NETWORK_STAGES:
        options.update(retries=2, retry_delay_seconds=[30, 120], retry_condition_fn=is_interrupted)
    return task(run_stage, **options)


TASKS = {stage: stage_task(stage) for stage in STAGES}


def collect_overrides(named: dict[str, Any], params: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted params.yaml keys from the flow's named parameters and its `params` dict."""
    overrides = {PARAMETER_KEYS[k]: v for k, v in named.items() if v is not None}
    overrides.update(params or {})
    return overrides


def publish_artifacts(project: Path) -> None:
    """The metrics table, the report, and links to the report and plots."""
    p = read_params(project / PARAMS_FILE).paths
    summaries = {run: json.loads((project / p.run_summary(run)).read_text()) for run in RUNS}
    evaluation = json.loads((project / p.evaluation).read_text())
    rows = [dict(zip(COMPARISON_HEADER, row)) for row in comparison_rows(summaries, evaluation)]
    create_table_artifact(rows, key="hotdog-metrics",
                          description="Final metrics of both runs beside d2l's published figures")
    create_markdown_artifact((project / p.report).read_text(), key="hotdog-report",
                             description=f"{project / p.report} (figures are in {project / p.figures})")
    stream_dvc(["plots", "show", "--out", PLOTS_DIR], project, lambda line: None)
    create_link_artifact((project / p.report).as_uri(), link_text=str(p.report), key="hotdog-link-report",
                         description="The report (open it beside its figures/ folder)")
    plots = project / PLOTS_DIR / "index.html"
    if plots.exists():
        create_link_artifact(plots.as_uri(), link_text="dvc plots show", key="hotdog-link-plots",
                             description="DVC's interactive plots of the training curves")
    figures = sorted((project / p.figures).glob("*.png"))
    create_markdown_artifact("\n".join(f"- [{f.name}]({f.as_uri()})" for f in figures),
                             key="hotdog-figures", description=f"The report's figures, in {project / p.figures}")


@flow(name="hotdog-pipeline", log_prints=True)
def hotdog_pipeline(
    finetune_lr: float | None = None,
    scratch_lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    image_size: int | None = None,
    device: Literal["auto", "cpu", "cuda"] | None = None,
    precision: Literal["auto", "fp32", "bf16"] | None = None,
    augment: Literal["auto", "workers", "device"] | None = None,
    data_url: str | None = None,
    data_sha1: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, bool]:
    """Run every DVC stage in order; overrides are written to params.yaml first.

    `params` takes any other key, dotted: {"train.weight_decay": 0.0005}.
    """
    logger = get_run_logger()
    project = project_dir()
    named = dict(finetune_lr=finetune_lr, scratch_lr=scratch_lr, epochs=epochs, batch_size=batch_size,
                 image_size=image_size, device=device, precision=precision, augment=augment, data_url=data_url,
                 data_sha1=data_sha1)
    try:
        changed = apply_overrides(collect_overrides(named, params), project / PARAMS_FILE)
    except ParamsError as err:
        raise StageFailed(str(err)) from None
    for key, (old, new) in changed.items():
        logger.info(f"params.yaml: {key}: {old!r} -> {new!r}")
    progress_id = create_progress_artifact(0.0, key="hotdog-progress",
                                           description="Pipeline progress; training counts per batch")
    ran = {stage: TASKS[stage](stage, progress_id) for stage in STAGES}
    publish_artifacts(project)
    return ran


def parse_args(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line flags -> the flow's keyword arguments."""
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    for name in PARAMETER_KEYS:
        kind = {"finetune_lr": float, "scratch_lr": float, "epochs": int, "batch_size": int,
                "image_size": int}.get(name, str)
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind,
                            help=f"sets {PARAMETER_KEYS[name]}")
    parser.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                        help="any params.yaml key, e.g. --set train.weight_decay=5e-4 (YAML value)")
    args = vars(parser.parse_args(argv))
    pairs = [item.partition("=") for item in args.pop("params")]
    args["params"] = {k: YAML(typ="safe").load(v) for k, _, v in pairs} or None
    return {k: v for k, v in args.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    """Run the flow once; exit status 1 when it fails."""
    state = hotdog_pipeline(**parse_args(argv), return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
