"""The report's figures in Prefect (issue #21): `make ui` serves reports/ on 127.0.0.1, a served
flow run publishes each figure as an image artifact, and in Chromium every image of the report
artifact loads. Also the link rewriting and the file server on their own."""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ENV, make_project, stop
from limits import E2E
from playwright.sync_api import sync_playwright
from prefect.deployments import run_deployment
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_API_URL, temporary_settings
from servers import CHROMIUM, CHROMIUM_ARGS, free_port
from test_flow import DEPLOYMENT, artifacts_of, logs_with, wait_for_deployment

from flows.pipeline import hotdog_pipeline
from hotdog.runner.artifacts import figure_key, figure_line, image_titles, served_links
from hotdog.runner.reports_server import REPORTS_URL_ENV, file_url, reports_url, serving_reports

PNG = b"\x89PNG\r\n\x1a\n"
LOADED = "imgs => imgs.map(i => [i.getAttribute('src'), i.naturalWidth])"  # each <img>'s source and width
REPORT = """# Report

![training curves](figures/curves.png)

See [the curves](./figures/curves.png), [d2l](https://d2l.ai/x.png) and [the top](#report).

![a mistake](figures/misclassified_finetune.png)
![not a figure](figures/gone.png)
"""


# ---------------------------------------------------------------- the link rewriting


def test_served_links_point_each_figure_at_its_url_and_leave_the_rest():
    urls = {"figures/curves.png": "http://127.0.0.1:4201/figures/curves.png?v=1",
            "figures/misclassified_finetune.png": "http://127.0.0.1:4201/figures/misclassified_finetune.png?v=2"}
    served = served_links(REPORT, urls)
    assert "![training curves](http://127.0.0.1:4201/figures/curves.png?v=1)" in served
    assert "[the curves](http://127.0.0.1:4201/figures/curves.png?v=1)" in served  # ./ is the same file
    assert "![a mistake](http://127.0.0.1:4201/figures/misclassified_finetune.png?v=2)" in served
    # Not a served figure: unchanged, as is everything else in the text.
    assert "[d2l](https://d2l.ai/x.png)" in served and "[the top](#report)" in served
    assert "![not a figure](figures/gone.png)" in served
    assert served.replace("http://127.0.0.1:4201/", "").replace("?v=1", "").replace("?v=2", "") == \
        REPORT.replace("./figures/", "figures/")


def test_without_a_server_the_report_is_published_as_written():
    assert served_links(REPORT, {}) == REPORT


def test_image_titles_are_the_reports_alt_texts():
    assert image_titles(REPORT) == {"figures/curves.png": "training curves",
                                    "figures/misclassified_finetune.png": "a mistake",
                                    "figures/gone.png": "not a figure"}


def test_figure_keys_are_what_prefect_accepts():
    assert figure_key(Path("figures/misclassified_finetune.png")) == "hotdog-figure-misclassified-finetune"
    assert figure_key(Path("Curves 2.png")) == "hotdog-figure-curves-2"
    assert figure_key(Path("__.png")) == "hotdog-figure-unnamed"
    for name in ("a_B.png", "x..y.png", "ünï.png"):
        assert re.fullmatch(r"[a-z0-9-]+", figure_key(Path(name)))


def test_file_urls_name_the_path_under_the_folder_and_the_content(tmp_path):
    folder = tmp_path / "reports"
    (folder / "figures").mkdir(parents=True)
    figure = folder / "figures" / "a b.png"
    figure.write_bytes(PNG + b"one")
    first = file_url("http://127.0.0.1:9/", folder, figure)
    assert re.fullmatch(r"http://127\.0\.0\.1:9/figures/a%20b\.png\?v=[0-9a-f]{12}", first)
    figure.write_bytes(PNG + b"two")
    assert file_url("http://127.0.0.1:9", folder, figure) != first  # a new run's figure is fetched anew
    with pytest.raises(ValueError):
        file_url("http://127.0.0.1:9", folder, tmp_path / "outside.png")


def test_the_figures_list_links_the_file_and_the_served_copy():
    file = Path("/p/reports/figures/curves.png")
    assert figure_line(file, None) == "- [curves.png](file:///p/reports/figures/curves.png)"
    assert figure_line(file, "http://h/figures/curves.png") == \
        "- [curves.png](file:///p/reports/figures/curves.png) ([open](http://h/figures/curves.png))"


def test_reports_url_is_the_environments(monkeypatch):
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    assert reports_url() is None
    monkeypatch.setenv(REPORTS_URL_ENV, "")
    assert reports_url() is None
    monkeypatch.setenv(REPORTS_URL_ENV, "http://127.0.0.1:4201/")
    assert reports_url() == "http://127.0.0.1:4201"


# ---------------------------------------------------------------- the file server


def get(base: str, path: str, method: str = "GET") -> tuple[int, str, bytes]:
    """A request with `path` sent exactly as written (no client-side normalising of `..`)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def test_the_server_serves_reports_and_nothing_outside_it(tmp_path):
    folder = tmp_path / "project" / "reports"
    (folder / "figures").mkdir(parents=True)
    (folder / "figures" / "curves.png").write_bytes(PNG + b"curves")
    (tmp_path / "project" / "params.yaml").write_text("secret: 1\n")
    (tmp_path / "secret.txt").write_text("secret")
    with serving_reports(folder, port=0) as base:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
        assert get(base, "/figures/curves.png") == (200, "image/png", PNG + b"curves")
        assert get(base, "/figures/curves.png?v=0123456789ab")[0] == 200
        for path in ("/../params.yaml", "/figures/../../params.yaml", "/%2e%2e/params.yaml",
                     "/..%2fparams.yaml", "/../../secret.txt", "//etc/passwd", "/" + str(tmp_path / "secret.txt")):
            status, _, body = get(base, path)
            assert status == 404 and b"secret" not in body, path
        assert get(base, "/")[0] == 404  # no listings
        assert get(base, "/figures/")[0] == 404
        assert get(base, "/figures/curves.png", "POST")[0] == 501  # read-only
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/figures/curves.png", timeout=2)  # stopped with the block


def test_the_server_listens_on_loopback_only_and_moves_off_a_taken_port(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with serving_reports(tmp_path, port=port) as base:
            assert base.startswith("http://127.0.0.1:") and base != f"http://127.0.0.1:{port}"
            assert get(base, "/nothing.png")[0] == 404


# ---------------------------------------------------------------- end to end, in Chromium


def served_reports_url(log: Path, ui: subprocess.Popen, timeout: float = 60) -> str:
    """The reports server's base URL, from `make ui`'s "Figures: <url>/ serves ..." line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := re.search(r"^Figures: (http://127\.0\.0\.1:\d+)/ serves ", log.read_text(), re.M):
            return found[1]
        assert ui.poll() is None, f"flows.ui exited:\n{log.read_text()}"
        time.sleep(0.5)
    raise AssertionError(f"flows.ui printed no reports URL:\n{log.read_text()}")


@pytest.fixture(scope="module")
def ui_run(served, tmp_path_factory):
    """`python -m flows.ui` in a fresh project, and one run of the pipeline deployment started
    through the API: (api url, reports url, project, flow run)."""
    project = make_project(tmp_path_factory.mktemp("ui") / "project", served)
    api = f"http://127.0.0.1:{free_port()}/api"
    home = tmp_path_factory.mktemp("prefect-home")
    env = {**ENV, "PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
    env.pop(REPORTS_URL_ENV, None)
    log = home / "ui.log"
    with log.open("w") as out:
        # Its own session, so that the server it starts is stopped with it.
        process = subprocess.Popen([sys.executable, "-m", "flows.ui"], cwd=project, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_deployment(api, process, log)
        reports = served_reports_url(log, process)
        with temporary_settings(updates={PREFECT_API_URL: api}):
            flow_run = run_deployment(DEPLOYMENT, parameters={}, timeout=900, poll_interval=2)
            yield api, reports, project, flow_run
    finally:
        stop(process, seconds=5, group=True)


def png_at(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png", url
        return response.read()


@pytest.mark.timeout(E2E)
def test_each_figure_is_an_image_artifact_served_from_reports(ui_run):
    _, reports, project, flow_run = ui_run
    assert flow_run.state.is_completed(), flow_run.state
    figures = sorted((project / "reports/figures").glob("*.png"))
    assert len(figures) >= 5
    artifacts = artifacts_of(flow_run.id)
    images = {key: a for key, a in artifacts.items() if a.type == "image"}
    assert set(images) == {figure_key(f) for f in figures}
    for figure in figures:
        url = images[figure_key(figure)].data
        assert url.startswith(f"{reports}/figures/{figure.name}?v="), url
        assert png_at(url) == figure.read_bytes()
    report = artifacts["hotdog-report"].data
    assert "](figures/" not in report  # every figure link now points at the server
    linked = re.findall(r"!\[[^\]]*\]\((http://[^)]+)\)", report)
    assert linked and all(url.startswith(f"{reports}/figures/") for url in linked)
    assert f"({(project / 'reports/figures/curves.png').as_uri()})" in artifacts["hotdog-figures"].data


@pytest.mark.timeout(E2E)
def test_the_report_artifacts_images_load_on_the_flow_run_page(ui_run, tmp_path):
    api, reports, _, flow_run = ui_run
    assert flow_run.state.is_completed(), flow_run.state
    expected = len(re.findall(r"!\[[^\]]*\]\(http://", artifacts_of(flow_run.id)["hotdog-report"].data))
    page_url = api.removesuffix("/api") + f"/runs/flow-run/{flow_run.id}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(page_url)
            page.get_by_text("Completed").first.wait_for(timeout=60_000)
            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text("hotdog-report").first.wait_for(timeout=30_000)
            page.get_by_text("hotdog-report").first.click()  # the report artifact's own page
            page.wait_for_url("**/artifacts/artifact/**", timeout=30_000)
            served = f"img[src^='{reports}/']"
            page.wait_for_function(f"document.querySelectorAll(\"{served}\").length >= {expected}", timeout=30_000)
            for image in page.locator(served).all():
                image.scroll_into_view_if_needed()  # in case the renderer loads images lazily
            page.wait_for_function(f"[...document.querySelectorAll(\"{served}\")].every(i => i.complete)",
                                   timeout=30_000)
            widths = page.eval_on_selector_all(served, LOADED)
            every = page.eval_on_selector_all("img", LOADED)
            # One figure's own image artifact, from the same tab.
            page.goto(page_url)
            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text("hotdog-figure-curves").first.click()
            page.wait_for_url("**/artifacts/artifact/**", timeout=30_000)
            page.wait_for_function(f"[...document.querySelectorAll(\"{served}\")].some(i => i.complete)",
                                   timeout=30_000)
            curves = page.eval_on_selector_all(served, LOADED)
        finally:
            page.screenshot(path=tmp_path / "report-artifact.png", full_page=True)
            browser.close()
    assert len(widths) == expected, widths
    assert all(width > 0 for _, width in widths), widths
    broken = [src for src, width in every if width == 0]
    assert broken == [], f"images that did not load on the page: {broken}"
    assert [(src.split("?")[0], width > 0) for src, width in curves] == [(f"{reports}/figures/curves.png", True)]


@pytest.mark.timeout(E2E)
def test_a_run_without_make_ui_keeps_file_links_and_says_so(ui_run, monkeypatch):
    # After the served run: every stage is up to date, so this run only publishes.
    _, _, project, _ = ui_run
    monkeypatch.delenv(REPORTS_URL_ENV, raising=False)
    monkeypatch.chdir(project)
    state = hotdog_pipeline(return_state=True)
    assert state.is_completed(), state
    flow_run = state.state_details.flow_run_id
    artifacts = artifacts_of(flow_run)
    assert not [key for key, a in artifacts.items() if a.type == "image"]
    assert artifacts["hotdog-report"].data == (project / "reports/report.md").read_text()  # links as written
    figures = artifacts["hotdog-figures"].data
    assert f"({(project / 'reports/figures/curves.png').as_uri()})" in figures and "http://" not in figures
    logs = logs_with(flow_run, "no reports server")
    assert any(f"no reports server ({REPORTS_URL_ENV} is unset" in line for line in logs), logs
    APILogHandler().flush()  # this run's last lines go out now, while the server is up
