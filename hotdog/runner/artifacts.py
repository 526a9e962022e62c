"""What a finished pipeline run shows in Prefect: the metrics table (beside d2l's figures when
the data is d2l's hotdog.zip), the report, and links to the report, DVC's plots and the
figures. Call it inside a flow run."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from hotdog.core.params import PARAMS_FILE, read_params
from hotdog.evaluation.results import comparison_header, comparison_rows, is_d2l_data, read_evaluation, read_runs
from hotdog.runner.dvc_run import stream_dvc

PLOTS_DIR = "dvc_plots"  # `dvc plots show` writes its HTML here (git-ignored)


def publish_artifacts(project: Path) -> None:
    """The metrics table, the report, and links to the report and plots."""
    params = read_params(project / PARAMS_FILE)
    rel, d2l = params.paths, is_d2l_data(params.data.sha1)
    p = rel.under(project)
    _, summaries = read_runs(p)  # the report stage's own checked readers
    evaluation = read_evaluation(p)
    header = comparison_header(evaluation)
    rows = [dict(zip(header, row)) for row in comparison_rows(summaries, evaluation, d2l)]
    create_table_artifact(rows, key="hotdog-metrics", description="Final test metrics of both runs"
                          + (" beside d2l's published figures" if d2l else ""))
    create_markdown_artifact(p.report.read_text(), key="hotdog-report",
                             description=f"{p.report} (figures are in {p.figures})")
    stream_dvc(["plots", "show", "--out", PLOTS_DIR], project, lambda line: None)
    create_link_artifact(p.report.as_uri(), link_text=str(rel.report), key="hotdog-link-report",
                         description="The report (open it beside its figures/ folder)")
    plots = project / PLOTS_DIR / "index.html"
    if plots.exists():
        create_link_artifact(plots.as_uri(), link_text="dvc plots show", key="hotdog-link-plots",
                             description="DVC's interactive plots of the training curves")
    figures = sorted(p.figures.glob("*.png"))
    create_markdown_artifact("\n".join(f"- [{f.name}]({f.as_uri()})" for f in figures),
                             key="hotdog-figures", description=f"The report's figures, in {p.figures}")
