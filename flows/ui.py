"""`make ui`: serve the flows as deployments on a Prefect server (the one at PREFECT_API_URL,
or a local one started for the purpose) and print the UI's address; beside it, the project's
reports/ folder on http at 127.0.0.1, where the UI loads the report's figures. Ctrl-C stops all.
Run from the repo root: python -m flows.ui
"""

from __future__ import annotations

import os
from pathlib import Path

from prefect import serve
from prefect.settings import PREFECT_API_URL, temporary_settings

# The flows import torch: here, before the server starts, since a Ctrl-C or SIGTERM that lands
# in torch's C++ import code aborts this process, which leaves a server it started running.
from flows.experiments import hotdog_experiments
from flows.pipeline import hotdog_pipeline
from flows.predict import hotdog_predict
from hotdog.core.params import PARAMS_FILE, ParamsError, read_params
from hotdog.runner.prefect_server import running_server
from hotdog.runner.reports_server import REPORTS_URL_ENV, serving_reports

DEPLOYMENT = "local"


def reports_folder(project: Path) -> Path:
    """paths.reports of the project's params.yaml; "reports" when that file cannot be read now
    (a flow run will say why, in one line: `make ui` serves the flows all the same)."""
    try:
        return read_params(project / PARAMS_FILE).paths.under(project).reports
    except ParamsError:
        return project / "reports"


def main() -> None:
    folder = reports_folder(Path.cwd())
    with running_server() as api_url, serving_reports(folder) as reports_url:
        # Served flow runs are subprocesses of this one and inherit its environment at their start.
        os.environ[REPORTS_URL_ENV] = reports_url
        ui = api_url.rstrip("/").removesuffix("/api")
        print(f"Figures: {reports_url}/ serves {folder} (the report's images in the UI load from there)",
              flush=True)
        print(f"Prefect UI: {ui}  (Deployments -> hotdog-pipeline, hotdog-experiments or hotdog-predict -> "
              f"{DEPLOYMENT} -> Run)", flush=True)
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            # limit=1 across both: two runs at once would collide on DVC's repo lock.
            serve(hotdog_pipeline.to_deployment(name=DEPLOYMENT, description="The hotdog DVC pipeline, one task "
                                                                             "per stage"),
                  hotdog_experiments.to_deployment(name=DEPLOYMENT, description="The chapter's exercises as DVC "
                                                                                "experiments, compared"),
                  hotdog_predict.to_deployment(name=DEPLOYMENT, description="Score a folder of photos or a list "
                                                                            "of URLs with a trained model"),
                  limit=1)


if __name__ == "__main__":
    main()
