"""Prefect flow `hotdog-experiments`: the chapter's exercises as DVC experiments, each run by
DVC in turn in a temporary copy of the repo, so the workspace stays as it is; it ends with
their comparison as a table. Without an `experiments` parameter it runs the set in
experiments.yaml, read when the flow runs: a broken file fails this flow alone, in one line.
Run once: python -m flows.experiments; serve: make ui
"""

# No `from __future__ import annotations` here: Prefect builds the flow's parameter model
# from real annotations, and a served run cannot resolve string ones.
import sys
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.repro import StageFailed, project_dir
from hotdog.core import events
from hotdog.core.params import PARAMS_FILE, read_params
from hotdog.experiments.compare import Failure, write_comparison
from hotdog.experiments.run import failed_message, run_set
from hotdog.experiments.spec import SET_FILE, ExperimentsError, check_set, read_set
from hotdog.runner.prefect_server import disable_server_telemetry


@task(name="run-experiments", cache_policy=NO_CACHE)
def run_experiments(experiments: dict[str, dict[str, Any]], sizes: dict[str, Any]
                    ) -> tuple[set[str], dict[str, Failure]]:
    """Run the set, one `dvc exp run --temp` after another, every line to the log as it
    comes: (the experiments' names, those that failed and why)."""
    logger = get_run_logger()

    def on_line(line: str) -> None:
        event = events.parse(line)
        if event is None:
            logger.info(line)
        elif isinstance(event, events.Failed):
            logger.error(event.message)

    return run_set(project_dir(), experiments, sizes, on_line)


@task(name="compare", cache_policy=NO_CACHE)
def compare(names: set[str], failed: dict[str, Failure]) -> list[dict[str, str]]:
    """reports/experiments.md and its figure; the table's rows."""
    header, rows = write_comparison(project_dir(), names, failed)
    return [dict(zip(header, row)) for row in rows]


@flow(name="hotdog-experiments", log_prints=True)
def hotdog_experiments(experiments: dict[str, dict[str, Any]] | None = None,
                       sizes: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Run each experiment of the set as a DVC experiment and compare them.

    `experiments` maps a name to the params.yaml keys it sets ({"freeze-body":
    {"finetune.freeze_body": true}}; a list is a grid); None runs the set in experiments.yaml. `sizes` apply to all of them, for a
    quick pass: {"train.epochs": 1, "train.image_size": 64}.
    """
    project = project_dir()
    try:
        if experiments is None:
            experiments = read_set(project / SET_FILE)
        check_set(experiments, sizes or {}, project / PARAMS_FILE)  # a bad key fails before anything runs
    except ExperimentsError as err:
        raise StageFailed(str(err)) from None
    names, failed = run_experiments(experiments, sizes or {})
    rows = compare(names, failed)
    paths = read_params(project / PARAMS_FILE).paths.under(project)
    create_table_artifact(rows, key="hotdog-experiments",
                          description="One row per experiment: what it changed, both models' test metrics")
    create_markdown_artifact(paths.experiments_report.read_text(), key="hotdog-experiments-report",
                             description=str(paths.experiments_report))
    create_link_artifact(paths.experiments_figure.as_uri(), link_text="test accuracy per epoch",
                         key="hotdog-experiments-figure", description=str(paths.experiments_figure))
    if failed:
        raise StageFailed(failed_message(failed))
    return rows


def main() -> int:
    """Run the flow once with the set in experiments.yaml; exit status 1 when it fails."""
    disable_server_telemetry()  # of the temporary server Prefect starts when no PREFECT_API_URL is set
    state = hotdog_experiments(return_state=True)
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
