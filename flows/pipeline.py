"""Prefect flow `hotdog-pipeline`: one task per DVC stage, each asking DVC to run it.

DVC stays the record (dvc.lock, cache, metrics), so a flow run and `dvc repro` are
interchangeable. With `push`, a last task `dvc push`es the outputs to the default DVC remote.
Run once: python -m flows.pipeline [--scratch-lr 1e-3 ... --push]; serve: make ui
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model
# from real annotations, and a served run cannot resolve string ones.
import argparse
import contextvars
import sys
import threading
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin
from uuid import UUID

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import create_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.exceptions import TerminationSignal
from prefect.states import Cancelled

from flows.repro import StageFailed, StageInterrupted, project_dir, repro
from hotdog.core import events
from hotdog.core.names import RUNS, STAGES
from hotdog.core.overrides import apply_overrides, parse_pairs
from hotdog.core.params import PARAMS_FILE, Params, ParamsError, read_params
from hotdog.runner import runlock
from hotdog.runner.artifacts import publish_artifacts, update_progress
from hotdog.runner.prefect_server import disable_server_telemetry
from hotdog.runner.remote import PushFailed, default_remote, push_outputs
from hotdog.runner.runlock import RepoBusy

NETWORK_STAGES = ("download", "weights")  # the only ones a retry can help
TRAINING_WEIGHT = 10  # a training stage counts this many times another in the progress bar
# Flow parameter -> params.yaml key; anything else goes through `params`. Each parameter's
# type is the key's type in hotdog.core.params (param_type), so the two cannot drift apart.
PARAMETER_KEYS = {
    "finetune_lr": "finetune.lr", "scratch_lr": "scratch.lr", "epochs": "train.epochs",
    "batch_size": "train.batch_size", "image_size": "train.image_size", "device": "train.device",
    "precision": "train.precision", "augment": "train.augment", "data_url": "data.url",
    "data_sha1": "data.sha1",
}


def param_type(key: str) -> Any:
    """The type of a dotted params.yaml key ("train.epochs" -> int), from the params models."""
    section, name = key.split(".")
    return Params.model_fields[section].annotation.model_fields[name].annotation


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

    def on_event(event: events.Event) -> None:
        if isinstance(event, events.Failed):
            logger.error(event.message)
        elif isinstance(event, events.Progress):
            update_progress(progress_id, start + width * event.done, logger)

    cached = False

    def on_text(line: str) -> None:
        nonlocal cached
        cached = cached or restored_from_run_cache(line)
        logger.info(line)

    # A run that no runner or worker started (`python -m flows.pipeline`) gets no signal when
    # it is cancelled: it would train on and stay Cancelling for good. So each stage watches.
    flow_run, stop, done = get_run_context().task_run.flow_run_id, threading.Event(), threading.Event()
    threading.Thread(target=contextvars.copy_context().run, args=(watch_for_cancel, flow_run, stop, done),
                     daemon=True).start()
    try:
        ran = repro(stage, project_dir(), on_text, on_event, stop)
    except TerminationSignal:
        # repro has stopped dvc's whole process group by now (hotdog.runner.dvc_run.stream_dvc).
        # Prefect would call the task Crashed; when the flow run is being cancelled (the
        # UI's Cancel button), the truth is Cancelled.
        if not flow_run_cancelling(flow_run):
            raise
        return cancelled(stage, logger)
    except StageFailed:
        if not stop.is_set():
            raise
        return cancelled(stage, logger)  # the stage failed because it was stopped
    finally:
        done.set()
    if stop.is_set():  # it ended before it could be stopped: the stages after it must not run
        return cancelled(stage, logger, finished=True)
    if not ran:
        logger.info(not_run_line(stage, cached))
    update_progress(progress_id, start + width, logger)  # the last one ends at 100
    return ran


def restored_from_run_cache(dvc_line: str) -> bool:
    """Whether DVC says it restored a stage's outputs from its run cache. (The one line of
    DVC's own text read here: if DVC rewords it, the flow says "up to date" again.)"""
    return "is cached - skipping run" in dvc_line


def not_run_line(stage: str, cached: bool) -> str:
    """Why DVC did not run `stage`: up to date, or restored from its run cache (what it uses
    changed, but to what an earlier run already had)."""
    if cached:
        return (f"{stage}: not run: DVC restored its outputs from its run cache (an earlier run had the same params, "
                "code and inputs)")
    return f"{stage}: up to date, not run (nothing it uses changed since dvc.lock)"


def cancelled(stage: str, logger, finished: bool = False) -> Cancelled:
    """The state of a task whose flow run is being cancelled."""
    if finished:
        logger.warning(f"{stage}: finished as the flow run was cancelled; no stage after it runs")
        return Cancelled(message=f"{stage} finished; the flow run was cancelled after it")
    logger.warning(f"{stage}: cancelled with the flow run; dvc and the stage were stopped")
    return Cancelled(message=f"{stage} was cancelled with its flow run; the next run resumes it")


def flow_run_cancelling(flow_run: UUID) -> bool:
    """Whether the flow run is being cancelled (Cancelling or Cancelled on the server)."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run).state
    return state is not None and (state.is_cancelling() or state.is_cancelled())


CANCEL_POLL_SECONDS = 2.0


def watch_for_cancel(flow_run: UUID, stop: threading.Event, done: threading.Event) -> None:
    """Until `done`, look every CANCEL_POLL_SECONDS whether the flow run is being cancelled,
    and set `stop` when it is."""
    while not done.wait(CANCEL_POLL_SECONDS):
        try:
            if flow_run_cancelling(flow_run):
                stop.set()
                return
        except Exception:  # the API for a moment: look again next time
            continue


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


@task(name="push", task_run_name="push", cache_policy=NO_CACHE)
def push_task() -> str:
    """The flow's last task: `dvc push`, streamed to the task's log; returns the remote's name.
    No retries: a missing remote or credential stays missing, and `dvc push` alone finishes a half-done upload."""
    logger = get_run_logger()
    name = push_outputs(project_dir(), logger.info)
    logger.info(f"push: the outputs are on DVC remote '{name}'; `dvc pull` in any clone fetches them")
    return name


def collect_overrides(named: dict[str, Any], params: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted params.yaml keys from the flow's named parameters and its `params` dict."""
    overrides = {PARAMETER_KEYS[k]: v for k, v in named.items() if v is not None}
    if named.get("data_url") is not None and named.get("data_sha1") is None:
        # A new source without a digest: a folder needs none, and a zip's is asked for in one line.
        overrides["data.sha1"] = None
    overrides.update(params or {})
    return overrides


@flow(name="hotdog-pipeline", log_prints=True)
def hotdog_pipeline(
    finetune_lr: param_type("finetune.lr") | None = None,
    scratch_lr: param_type("scratch.lr") | None = None,
    epochs: param_type("train.epochs") | None = None,
    batch_size: param_type("train.batch_size") | None = None,
    image_size: param_type("train.image_size") | None = None,
    device: param_type("train.device") | None = None,
    precision: param_type("train.precision") | None = None,
    augment: param_type("train.augment") | None = None,
    data_url: param_type("data.url") | None = None,
    data_sha1: param_type("data.sha1") | None = None,
    params: dict[str, Any] | None = None,
    push: bool = False,
) -> dict[str, bool]:
    """Run every DVC stage in order; overrides are written to params.yaml first.

    `params` takes any other key, dotted: {"train.weight_decay": 0.0005}. `push` runs
    `dvc push` to the default DVC remote after the last stage.
    """
    logger = get_run_logger()
    project = project_dir()
    named = dict(finetune_lr=finetune_lr, scratch_lr=scratch_lr, epochs=epochs, batch_size=batch_size,
                 image_size=image_size, device=device, precision=precision, augment=augment, data_url=data_url,
                 data_sha1=data_sha1)
    pushed = None
    if push:
        try:
            default_remote(project)  # no remote: fail now, not after the training
        except PushFailed as err:
            raise StageFailed(str(err)) from None
    try:
        # The run lock comes first: params.yaml must not change under another run.
        with runlock.holding(read_params(project / PARAMS_FILE).paths.under(project).run_lock):
            changed = apply_overrides(collect_overrides(named, params), project / PARAMS_FILE)
            for key, (old, new) in changed.items():
                logger.info(f"params.yaml: {key}: {old!r} -> {new!r}")
            progress_id = create_progress_artifact(0.0, key="hotdog-progress",
                                                   description="Pipeline progress; training counts per batch")
            ran = {}
            for stage in STAGES:
                state = TASKS[stage](stage, progress_id, return_state=True)
                if state.is_cancelled():
                    return state  # the flow run ends Cancelled too, with no stage after it
                ran[stage] = state.result()  # a failed stage's error fails the flow run
            if push:
                # Under the run lock, so no other run rewrites an output while it is uploaded.
                pushed = push_task(return_state=True)
            if flow_run_cancelling(get_run_context().flow_run.id):
                # Cancelled during a last stage too short for its watcher, or during the push:
                # asked for Completed, the server would keep the run Cancelling for good.
                return Cancelled(message="cancelled after its last stage; every stage had finished")
    except (ParamsError, RepoBusy) as err:
        raise StageFailed(str(err)) from None
    publish_artifacts(project)
    if pushed is not None:
        # Only now: the run's results stand (and are in the local cache) even when the upload
        # failed, so they are published first; then the push's error fails the flow run.
        pushed.result()
    return ran


def parse_args(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line flags -> the flow's keyword arguments."""
    parser = argparse.ArgumentParser(prog="python -m flows.pipeline", description=__doc__.splitlines()[0])
    for name, key in PARAMETER_KEYS.items():
        kind = param_type(key)
        if get_origin(kind) in (Union, UnionType):  # X | None: a flag gives an X; null is the flag left out
            kind = next(arg for arg in get_args(kind) if arg is not type(None))
        choices = get_args(kind) if get_origin(kind) is Literal else None
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind if choices is None else str,
                            choices=choices, help=f"sets {key}")
    parser.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                        help="any params.yaml key, e.g. --set train.weight_decay=5e-4 (YAML value)")
    # default=None: left out of the flow's arguments unless given, as every other flag.
    parser.add_argument("--push", action="store_true", default=None,
                        help="after the run, `dvc push` the outputs to the default DVC remote")
    args = vars(parser.parse_args(argv))
    try:
        args["params"] = parse_pairs(args.pop("params"), "--set") or None
    except ParamsError as err:
        parser.error(str(err))  # before a server starts or anything is written
    return {k: v for k, v in args.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    """Run the flow once; exit status 1 when it fails."""
    disable_server_telemetry()  # of the temporary server Prefect starts when no PREFECT_API_URL is set
    state = hotdog_pipeline(**parse_args(argv), return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
