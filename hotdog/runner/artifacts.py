"""What a finished pipeline run shows in Prefect: the metrics table (beside d2l's figures when
the data is d2l's hotdog.zip), the report, and links to the report, DVC's plots and the
figures. Under `make ui`, whose server has reports/ on http (hotdog.runner.reports_server), the
report's images load from there and each figure is an image artifact too. Call it inside a flow run."""

from __future__ import annotations

import logging
import posixpath
import re
import time
from pathlib import Path
from typing import Mapping
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from hotdog.core.params import PARAMS_FILE, read_params
from hotdog.core.paths import Paths
from hotdog.evaluation.results import comparison_header, comparison_rows, is_d2l_data, read_evaluation, read_runs
from hotdog.runner.dvc_run import stream_dvc
from hotdog.runner.reports_server import REPORTS_URL_ENV, file_url, reports_url

PLOTS_DIR = "dvc_plots"  # `dvc plots show` writes its HTML here (git-ignored)
# A markdown link or image, [text](target) or ![alt](target), with no title after the target.
LINK = re.compile(r"(?P<bang>!?)\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)\)")


def publish_artifacts(project: Path) -> None:
    """The metrics table, the report, links to the report and plots, and the figures."""
    params = read_params(project / PARAMS_FILE)
    rel, d2l = params.paths, is_d2l_data(params.data.sha1)
    p = rel.under(project)
    _, summaries = read_runs(p)  # the report stage's own checked readers
    evaluation = read_evaluation(p)
    header = comparison_header(evaluation)
    rows = [dict(zip(header, row)) for row in comparison_rows(summaries, evaluation, d2l)]
    create_table_artifact(rows, key="hotdog-metrics", description="Final test metrics of both runs"
                          + (" beside d2l's published figures" if d2l else ""))
    figures = sorted(p.figures.glob("*.png"))
    urls = figure_urls(p, figures)
    report = p.report.read_text()
    create_markdown_artifact(served_links(report, urls), key="hotdog-report",
                             description=f"{p.report} (figures are in {p.figures})")
    said: list[str] = []
    plotted = stream_dvc(["plots", "show", "--out", PLOTS_DIR], project, said.append) == 0
    create_link_artifact(p.report.as_uri(), link_text=str(rel.report), key="hotdog-link-report",
                         description="The report (open it beside its figures/ folder)")
    plots = project / PLOTS_DIR / "index.html"
    if not plotted:  # an index.html there is an earlier run's
        get_run_logger().warning(f"`dvc plots show` failed, so no link to the plots: {' '.join(said[-3:])}")
    elif plots.exists():
        create_link_artifact(plots.as_uri(), link_text="dvc plots show", key="hotdog-link-plots",
                             description="DVC's interactive plots of the training curves")
    served = {f: urls.get(report_path(p, f)) for f in figures}
    create_markdown_artifact("\n".join(figure_line(f, url) for f, url in served.items()),
                             key="hotdog-figures", description=f"The report's figures, in {p.figures}")
    publish_images(served, image_titles(report), p, project)


# After a failed update, a progress bar is left alone this long: Prefect's client retries a
# slow or failing API for a minute or more, and the update is made from the loop that reads
# dvc's output, which would stall the stage behind it.
PROGRESS_PAUSE_SECONDS = 60.0
_FAILED_PROGRESS: dict[UUID, float] = {}  # progress artifact -> when its last update failed


def update_progress(progress_id: UUID | None, percent: float, logger: logging.Logger | logging.LoggerAdapter) -> None:
    """Move a progress artifact to `percent`. A failed update is one warning, and the run goes
    on: the bar is a view of the run, and a Prefect API that restarts or answers slowly for a
    moment must not stop a training stage (a failure here stopped dvc's whole process group),
    nor slow it (updates pause for PROGRESS_PAUSE_SECONDS after a failure)."""
    if progress_id is None:
        return
    failed_at = _FAILED_PROGRESS.get(progress_id)
    if failed_at is not None and time.monotonic() - failed_at < PROGRESS_PAUSE_SECONDS:
        return
    try:
        update_progress_artifact(progress_id, round(percent, 2))
    except Exception as err:
        if failed_at is None:
            logger.warning(f"the progress bar could not be updated ({type(err).__name__}: {err}); the run goes on, "
                           "and the bar may stand still")
        _FAILED_PROGRESS[progress_id] = time.monotonic()


def figure_urls(p: Paths, figures: list[Path]) -> dict[str, str]:
    """Report-relative path -> http URL of each figure, on `make ui`'s server; {} without one."""
    base = reports_url()
    if base is None:
        get_run_logger().info(f"no reports server ({REPORTS_URL_ENV} is unset: this run is not served by "
                              "`make ui`): the report's figures stay file links, and no image artifacts")
        return {}
    return {report_path(p, f): file_url(base, p.reports, f) for f in figures}


def report_path(p: Paths, file: Path) -> str:
    """`file` as report.md links it: relative to the report's folder."""
    return file.relative_to(p.report.parent).as_posix()


def served_links(markdown: str, urls: Mapping[str, str]) -> str:
    """`markdown` with each link or image whose target is a key of `urls` (a report-relative
    path, "figures/curves.png") pointing at that URL instead; every other link unchanged."""
    def swap(match: re.Match) -> str:
        target = match["target"]
        url = None if "://" in target else urls.get(posixpath.normpath(target))
        return match[0] if url is None else f"{match['bang']}[{match['text']}]({url})"

    return LINK.sub(swap, markdown)


def image_titles(markdown: str) -> dict[str, str]:
    """Report-relative image path -> its alt text, for the image artifacts' descriptions."""
    return {posixpath.normpath(m["target"]): m["text"] for m in LINK.finditer(markdown) if m["bang"]}


def figure_key(file: Path) -> str:
    """The image artifact's key: "hotdog-figure-" and the name in lowercase letters, digits, dashes."""
    return "hotdog-figure-" + (re.sub(r"[^a-z0-9]+", "-", file.stem.lower()).strip("-") or "unnamed")


def figure_line(file: Path, url: str | None) -> str:
    """One figure in the hotdog-figures list: its file link, and its http link when served."""
    return f"- [{file.name}]({file.as_uri()})" + (f" ([open]({url}))" if url else "")


def publish_images(served: Mapping[Path, str | None], titles: Mapping[str, str], p: Paths, project: Path) -> None:
    """An image artifact for each served figure, described by its alt text in the report."""
    for file, url in served.items():
        if url is not None:
            title = titles.get(report_path(p, file), file.stem.replace("_", " "))
            create_image_artifact(image_url=url, key=figure_key(file),
                                  description=f"{title}: {file.relative_to(project)} in the report")
