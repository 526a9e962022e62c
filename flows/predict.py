"""Prefect flow `hotdog-predict`: score a folder of photos, or a list of URLs, with a trained
model, by its own class names; write the answers to a Parquet file (paths.scored) and end
with tables of them. It calls hotdog.serving.predict, as the `hotdog predict` command does;
it is no DVC stage, since new photos are no part of the pipeline's record.
Run once: python -m flows.predict FOLDER [--model scratch]; serve: make ui
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model
# from real annotations, and a served run cannot resolve string ones.
import argparse
import sys
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_link_artifact,
    create_progress_artifact,
    create_table_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context

from flows.repro import StageFailed, project_dir
from hotdog.core.errors import StageError
from hotdog.core.names import RUNS
from hotdog.core.params import PARAMS_FILE, read_params
from hotdog.core.schema import SCORED, write_table
from hotdog.runner.artifacts import update_progress
from hotdog.runner.prefect_server import disable_server_telemetry
from hotdog.serving import predict, sources

EXTREMES = 10  # most and least confident images in the summary table


@task(name="score", cache_policy=NO_CACHE)
def score(inputs: list[str], model: str, device: str, precision: str, batch_size: int) -> list[predict.Answer]:
    """Every image's answer, in batches; the progress artifact moves per batch."""
    logger = get_run_logger()
    try:
        runtime = predict.pick_runtime(device, precision)
        models = [predict.load_model(model, runtime[0])]
    except StageError as err:
        raise StageFailed(str(err)) from None
    items = list(sources.expand(inputs))
    classes = models[0].classes
    logger.info("scoring %d image(s) with %s (%d classes: %s) on %s, %s", len(items), model, len(classes),
                ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else ""), *runtime)
    progress = create_progress_artifact(0.0, key="hotdog-predict-progress", description="Images scored")
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        update_progress(progress, 100 * done / len(items), logger)

    answers = list(predict.score(models, items, *runtime, batch_size, on_batch))
    for a in answers:
        if a.error is not None:
            logger.warning("%s: %s", a.source, a.error)
    return answers


@task(name="write", cache_policy=NO_CACHE)
def write(answers: list[predict.Answer], out: Path) -> None:
    """The answers as a Parquet file (hotdog.core.schema.SCORED), written atomically."""
    try:
        write_table(predict.table(answers), out, SCORED)
    except StageError as err:
        raise StageFailed(str(err)) from None


@flow(name="hotdog-predict", log_prints=True)
def hotdog_predict(folder: str | None = None, urls: list[str] | None = None, model: str = "finetune",
                   out: str | None = None, device: Literal["auto", "cpu", "cuda"] = "auto",
                   precision: Literal["auto", "fp32", "bf16"] = "auto",
                   batch_size: int = predict.BATCH_SIZE) -> dict[str, int]:
    """Classify every photo in `folder` (searched recursively) and at each of `urls`.

    `model`: finetune, scratch, or a checkpoint path. `out`: the Parquet file to write,
    by default <paths.scored>/<this flow run's name>.parquet. Relative paths are taken
    from the project's root. Returns the number of images per predicted class, by the model's
    class names (and "error" for those not scored).
    """
    project = project_dir()
    if not folder and not urls:
        raise StageFailed("nothing to score: set `folder` (a folder of photos) or `urls` (a list of http(s) URLs)")
    if folder and not (project / folder).is_dir():  # else the run "completes", with one error row
        raise StageFailed(f"folder={folder}: no such folder in {project}; name a folder of photos, absolute or "
                          "relative to the project")
    inputs = [str(project / folder)] if folder else []
    inputs += list(urls or [])
    spec = model if model in RUNS else str(project / model)
    if out is None:
        scored = read_params(project / PARAMS_FILE).paths.under(project).scored
        dest = scored / f"{get_run_context().flow_run.name}.parquet"
    else:
        dest = project / out
    if dest.suffix != ".parquet":
        raise StageFailed(f"out={out}: name a .parquet file")
    answers = score(inputs, spec, device, precision, batch_size)
    write(answers, dest)
    # Folder images are shown relative to it, as the user sees them in the folder.
    shown = [a._replace(source=relative(a.source, project / folder) if folder else a.source) for a in answers]
    counts, extremes = predict.summary(shown, EXTREMES)
    create_table_artifact(counts, key="hotdog-predict-counts",
                          description=f"Images per predicted class ({model}); `error` counts images not scored")
    create_table_artifact(extremes, key="hotdog-predict-confidence",
                          description=f"The {EXTREMES} most and least confident answers of {model}")
    create_link_artifact(dest.as_uri(), link_text=dest.name, key="hotdog-predict-file",
                         description=f"Every answer: {dest}")
    totals = {row["class"]: row["images"] for row in counts}
    print(f"wrote {len(answers)} answers to {dest}: "
          + ", ".join(f"{n} {name}" for name, n in totals.items()))
    return totals


def relative(source: str, folder: Path) -> str:
    """A folder image's path relative to the folder; a URL or other input as it is."""
    try:
        return str(Path(source).relative_to(folder))
    except ValueError:
        return source


def main(argv: list[str] | None = None) -> int:
    """Run the flow once from the command line; exit status 1 when it fails."""
    parser = argparse.ArgumentParser(prog="python -m flows.predict", description=hotdog_predict.__doc__)
    parser.add_argument("folder", nargs="?")
    parser.add_argument("--url", action="append", dest="urls")
    parser.add_argument("--model", default="finetune")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    disable_server_telemetry()  # of the temporary server Prefect starts when no PREFECT_API_URL is set
    state = hotdog_predict(folder=args.folder, urls=args.urls, model=args.model, out=args.out,
                           return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
