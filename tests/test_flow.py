"""The Prefect flow against a real Prefect server, started the way `make ui` starts it,
with runs from the API (as the UI's Run button makes them) and a look in real Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import ENV, dvc_repro, dvc_status, make_project, sh, started, stop
from limits import E2E
from playwright.sync_api import sync_playwright
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment
from prefect.logging.handlers import APILogHandler
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling
from servers import CHROMIUM, CHROMIUM_ARGS, free_port, serve_directory
from synthetic import class_files, write_tree

from flows.pipeline import hotdog_pipeline
from hotdog.core.names import STAGES
from hotdog.runner.artifacts import figure_key
from hotdog.runner.reports_server import REPORTS_URL_ENV

pytestmark = pytest.mark.timeout(E2E)  # whole pipeline runs, through dvc or Prefect
DEPLOYMENT = "hotdog-pipeline/local"
EXPERIMENTS = "hotdog-experiments/local"
PREDICT = "hotdog-predict/local"
LOADED = "imgs => imgs.map(i => [i.getAttribute('src'), i.naturalWidth])"  # each <img>'s source and width
BROKEN_SET = "freeze-body: {finetune.freeze_body: true\n"  # an unclosed mapping


def wait_for_deployment(api: str, ui: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Until `make ui`'s process has registered both deployments."""
    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert ui.poll() is None, f"flows.ui exited:\n{log.read_text()}"
            try:
                client.read_deployment_by_name(DEPLOYMENT)
                client.read_deployment_by_name(EXPERIMENTS)
                client.read_deployment_by_name(PREDICT)
                return
            except Exception:  # not up yet, or not registered yet
                time.sleep(1)
    raise AssertionError(f"no deployment after {timeout} s:\n{log.read_text()}")


SERVED: dict[str, str] = {}  # the reports server's base URL, once the ui fixture has read it


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
def ui(served, tmp_path_factory):
    """`python -m flows.ui` in a fresh project, on a free loopback port: (api url, project).

    Its experiments.yaml is broken on purpose: `make ui` must serve every flow regardless, and
    only a run of the experiments flow that reads the file fails (tests below pass the set
    they run as a parameter)."""
    project = make_project(tmp_path_factory.mktemp("ui") / "project", served)
    (project / "experiments.yaml").write_text(BROKEN_SET)
    api = f"http://127.0.0.1:{free_port()}/api"
    home = tmp_path_factory.mktemp("prefect-home")
    env = {**ENV, "PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
    log = home / "ui.log"
    with log.open("w") as out:
        # Its own session, so that the server it starts is stopped with it.
        process = subprocess.Popen([sys.executable, "-m", "flows.ui"], cwd=project, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_deployment(api, process, log)
        # Its server's log lies beside the server's database, not in /tmp.
        assert (home / f"hotdog-prefect-server-{urlparse(api).port}.log").is_file(), log.read_text()
        SERVED["reports"] = served_reports_url(log, process)
        with temporary_settings(updates={PREFECT_API_URL: api}):
            yield api, project
    finally:
        # The served flows and the server keep nothing a test needs, but the server is in a
        # session of its own, which flows.ui stops as it exits (about 3 s): a SIGKILL before
        # that would leave it running.
        stop(process, seconds=30, group=True)


@pytest.fixture(scope="module")
def ui_run(ui):
    """One run of the deployment, started through the API as the UI's Run button does."""
    api, project = ui
    flow_run = run_deployment(DEPLOYMENT, parameters={}, timeout=900, poll_interval=2)
    return api, project, flow_run


def logs_of(flow_run_id) -> list[str]:
    """Every log line of a flow run and its tasks, oldest first."""
    messages, offset = [], 0
    with get_client(sync_client=True) as client:
        while page := client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                       limit=200, offset=offset):
            messages += [log.message for log in page]
            offset += len(page)
    return messages


def logs_with(flow_run_id, *needed: str, timeout: float = 60) -> list[str]:
    """The run's logs once some line holds each needed text: Prefect ships logs in batches."""
    deadline = time.monotonic() + timeout
    while True:
        logs = logs_of(flow_run_id)
        if all(any(text in line for line in logs) for text in needed) or time.monotonic() > deadline:
            return logs
        time.sleep(1)


def task_runs_of(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run for run in runs}


def artifacts_of(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key: a for a in artifacts}


def test_a_run_from_the_ui_completes_with_its_artifacts(ui_run, tmp_path):
    api, project, flow_run = ui_run
    assert flow_run.state.is_completed(), flow_run.state
    tasks = task_runs_of(flow_run.id)
    assert set(tasks) == set(STAGES) and all(t.state.is_completed() for t in tasks.values())
    logs = logs_with(flow_run.id, "report: wrote reports/report.md and reports/figures/")
    assert any(line.startswith("finetune epoch 1/1: batch") for line in logs)  # streamed progress
    assert any(line.startswith("scratch epoch 1/1: loss") for line in logs)
    artifacts = artifacts_of(flow_run.id)
    assert {"hotdog-metrics", "hotdog-report", "hotdog-progress", "hotdog-link-report",
            "hotdog-link-plots", "hotdog-figures"} <= set(artifacts)
    table = json.loads(artifacts["hotdog-metrics"].data)
    # d2l's rows stand beside a run on d2l's own hotdog.zip only; this is a synthetic set.
    assert [row["run"] for row in table] == ["fine-tune (ours)", "scratch (ours)"]
    assert artifacts["hotdog-progress"].data == 100.0
    assert "# Image classification, 2 classes" in artifacts["hotdog-report"].data
    # Prefect stores a link artifact as markdown: [text](url).
    assert f"({(project / 'reports/report.md').as_uri()})" in artifacts["hotdog-link-report"].data
    assert f"({(project / 'dvc_plots/index.html').as_uri()})" in artifacts["hotdog-link-plots"].data
    assert f"({(project / 'reports/figures/curves.png').as_uri()})" in artifacts["hotdog-figures"].data

    page_url = api.removesuffix("/api") + f"/runs/flow-run/{flow_run.id}"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(page_url)
        page.get_by_text("Completed").first.wait_for(timeout=60_000)
        page.get_by_text(f"{len(STAGES)} Task runs").first.wait_for(timeout=30_000)  # loads later
        # The page re-renders as its parts load: read it once it shows the state and the flow.
        page.wait_for_function("document.body.innerText.includes('Completed') && "
                               "document.body.innerText.includes('hotdog-pipeline')", timeout=30_000)
        run_page = page.inner_text("body")
        page.get_by_text("Artifacts", exact=True).click()
        page.get_by_text("hotdog-metrics").first.wait_for(timeout=30_000)
        page.screenshot(path=tmp_path / "flow-run-artifacts.png", full_page=True)
        page.get_by_text("hotdog-metrics").first.click()  # the table itself
        page.get_by_text("fine-tune (ours)").first.wait_for(timeout=30_000)
        page.screenshot(path=tmp_path / "metrics-table.png", full_page=True)
        table_page = page.inner_text("body")
        browser.close()
    assert "Completed" in run_page and "hotdog-pipeline" in run_page
    for cell in ("fine-tune (ours)", "scratch (ours)", table[0]["test acc"]):
        assert cell in table_page
    assert "(d2l)" not in table_page
    assert (tmp_path / "flow-run-artifacts.png").stat().st_size > 10_000


def test_after_a_flow_run_dvc_has_nothing_to_do(ui_run, monkeypatch):
    api, project, _ = ui_run
    assert dvc_status(project) == {}
    assert started(dvc_repro(project)) == ["source"]  # DVC runs it every time; nothing after it
    monkeypatch.chdir(project)
    state = hotdog_pipeline(return_state=True)
    assert state.is_completed()
    assert state.result() == {stage: stage == "source" for stage in STAGES}  # what each task says DVC did
    expected = [f"{stage}: up to date, not run (nothing it uses changed since dvc.lock)" for stage in STAGES[1:]]
    logs = logs_with(state.state_details.flow_run_id, *expected)
    for line in expected:
        assert line in logs


# ------------------------------------------------------------------ the figures (issue #21)


def png_at(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/png", url
        return response.read()


def test_each_figure_is_an_image_artifact_served_from_reports(ui_run):
    _, project, flow_run = ui_run
    reports = SERVED["reports"]
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


def test_the_report_artifacts_images_load_on_the_flow_run_page(ui_run, tmp_path):
    api, _, flow_run = ui_run
    reports = SERVED["reports"]
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


def test_a_run_without_make_ui_keeps_file_links_and_says_so(ui_run, monkeypatch):
    # After the served run: every stage is up to date, so this run only publishes.
    _, project, _ = ui_run
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


def test_an_override_shows_in_dvc_and_changes_the_metrics(ui_run, tmp_path, monkeypatch):
    _, base, _ = ui_run
    project = tmp_path / "project"
    shutil.copytree(base, project, symlinks=True)
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "base run")
    monkeypatch.chdir(project)
    state = hotdog_pipeline(scratch_lr=0.05, return_state=True)
    assert state.is_completed()
    params = json.loads(sh(project, "dvc", "params", "diff", "--json"))["params.yaml"]
    assert list(params) == ["scratch.lr"] and params["scratch.lr"]["new"] == 0.05
    metrics = json.loads(sh(project, "dvc", "metrics", "diff", "--json"))
    changed = {f"{file}:{key}" for file, keys in metrics.items() for key in keys}
    assert "metrics/scratch.json:loss" in changed and "metrics/evaluate.json:scratch.loss" in changed
    assert not any("finetune" in key for key in changed)
    ran = [stage for stage, ran in state.result().items() if ran]
    assert ran == ["source", "scratch", "evaluate", "export", "report"]
    logs = logs_with(state.state_details.flow_run_id, "report: wrote reports/report.md and reports/figures/")
    assert any(line.startswith("report: wrote reports/report.md") for line in logs)  # the stage's own lines


def test_a_bad_override_fails_the_run_before_any_stage(ui_run, monkeypatch):
    _, project, _ = ui_run
    before = (project / "params.yaml").read_bytes()
    monkeypatch.chdir(project)
    state = hotdog_pipeline(params={"train.epoch": 2}, return_state=True)
    assert state.is_failed()
    assert "unknown key 'train.epoch'" in state.message
    assert task_runs_of(state.state_details.flow_run_id) == {}
    assert (project / "params.yaml").read_bytes() == before


def test_a_wrong_sha1_fails_at_once_and_stops_the_flow(ui, served, tmp_path):
    api, _ = ui
    project = make_project(tmp_path / "project", served)
    run = subprocess.run([sys.executable, "-m", "flows.pipeline", "--data-sha1", "0" * 40],
                         cwd=project, env={**ENV, "PREFECT_API_URL": api}, capture_output=True, text=True)
    assert run.returncode == 1
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(limit=1, sort=FlowRunSort.START_TIME_DESC)
    assert flow_run.state.is_failed()
    assert "sha1 mismatch: expected 0000000000000000000000000000000000000000" in flow_run.state.message
    logs = logs_with(flow_run.id, "sha1 mismatch")
    assert any("error: download:" in line and "sha1 mismatch" in line for line in logs)
    tasks = task_runs_of(flow_run.id)
    assert sorted(tasks) == ["download", "source"] and tasks["download"].run_count == 1  # no retry
    assert not (project / "data" / "hotdog").exists()


def test_the_predict_deployment_scores_a_folder_and_urls(ui_run, tmp_path):
    """hotdog-predict, run through the API as the UI's Run button does, on the trained
    project: every image in the Parquet file and in the counts, the corrupt one as an error."""
    _, project, _ = ui_run
    folder = project / "data/hotdog/test"
    images = sorted(p for p in folder.rglob("*") if p.is_file())
    shutil.copy(images[0], tmp_path / "lunch.png")
    bad = run_deployment(PREDICT, parameters={}, timeout=300, poll_interval=2)
    assert bad.state.is_failed() and "nothing to score" in bad.state.message
    with serve_directory(tmp_path) as base:
        flow_run = run_deployment(PREDICT, parameters={"folder": "data/hotdog/test", "urls": [f"{base}/lunch.png"],
                                                       "precision": "fp32"},
                                  timeout=600, poll_interval=2)
    assert flow_run.state.is_completed(), flow_run.state
    written = project / "scored" / f"{flow_run.name}.parquet"
    rows = pq.read_table(written).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted([*map(str, images), f"{base}/lunch.png"])
    errors = [r for r in rows if r["error"]]
    assert [Path(r["path"]).name for r in errors] == ["1000.png"]  # the synthetic set's corrupt image
    artifacts = artifacts_of(flow_run.id)
    counts = json.loads(artifacts["hotdog-predict-counts"].data)
    assert sum(row["images"] for row in counts) == len(images) + 1
    assert {row["class"]: row["images"] for row in counts}.get("error") == 1
    confident = json.loads(artifacts["hotdog-predict-confidence"].data)
    good = len(rows) - 1
    assert [r["confidence"] for r in confident] == ["most"] * min(10, good) + ["least"] * min(10, good)
    assert confident[0]["image"] in {*(str(p.relative_to(folder)) for p in images), f"{base}/lunch.png"}
    assert artifacts["hotdog-predict-progress"].data == 100.0
    assert f"({written.as_uri()})" in artifacts["hotdog-predict-file"].data


def test_the_experiments_deployment_runs_them_and_tabulates_them(ui_run):
    # Last in this module: it commits the served project, which DVC's experiments need.
    _, project, _ = ui_run
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "baseline for experiments")
    before = (project / "params.yaml").read_bytes()
    # No set given: the flow reads experiments.yaml, which the ui fixture broke, and fails
    # alone, in one line, before any task; the server served every flow all the same.
    broken = run_deployment(EXPERIMENTS, parameters={}, timeout=300, poll_interval=2)
    assert broken.state.is_failed() and task_runs_of(broken.id) == {}
    assert broken.state.message.count("\n") == 0 and "experiments.yaml: line 2 is not valid YAML" in broken.state.message
    bad = run_deployment(EXPERIMENTS, parameters={"experiments": {"typo": {"finetune.lrr": 1e-4}}},
                         timeout=300, poll_interval=2)
    assert bad.state.is_failed() and "experiment 'typo'" in bad.state.message
    assert "unknown key 'finetune.lrr'" in bad.state.message and task_runs_of(bad.id) == {}

    # One experiment: tests/test_experiments.py runs a whole set, grids and failures included.
    # It changes the manifest stage's param and not its files, so DVC re-runs that stage alone.
    one = {"lenient": {"manifest.max_reject_fraction": 0.5}}
    flow_run = run_deployment(EXPERIMENTS, parameters={"experiments": one, "sizes": {"train.epochs": 1}},
                              timeout=900, poll_interval=2)
    assert flow_run.state.is_completed(), flow_run.state
    table = json.loads(artifacts_of(flow_run.id)["hotdog-experiments"].data)
    assert [(row["experiment"], row["params changed"]) for row in table] == [("lenient",
                                                                              "manifest.max_reject_fraction=0.5")]
    logs = logs_with(flow_run.id, "Reproducing experiment 'lenient'", " rejected (see ")
    assert any(line.startswith("test: ") and " rejected (see " in line for line in logs)  # the stage's own, live
    assert (project / "params.yaml").read_bytes() == before


def test_a_ui_run_on_a_new_folder_of_photos_learns_its_classes(ui_run, tmp_path):
    # After the experiments test: this run points the served project at another data set.
    _, project, _ = ui_run
    photos = tmp_path / "photos"
    write_tree(tmp_path, class_files(("ant", "bee", "cat"), 8, top="photos"))
    flow_run = run_deployment(DEPLOYMENT, parameters={"data_url": str(photos), "params": {"data.test_fraction": 0.3}},
                              timeout=900, poll_interval=2)
    assert flow_run.state.is_completed(), flow_run.state
    evaluation = json.loads((project / "metrics/evaluate.json").read_text())
    assert evaluation["finetune"]["classes"] == ["ant", "bee", "cat"]
    assert set(evaluation["scratch"]["confusion"]) == {"ant", "bee", "cat"}
    report = artifacts_of(flow_run.id)["hotdog-report"].data
    assert "# Image classification, 3 classes" in report and all(name in report for name in ("ant", "bee", "cat"))


# ------------------------------------------------------------------ faults (issue #11)


def run_processes(project: Path) -> dict[int, str]:
    """The processes of a flow run in `project`: Prefect's engine process, dvc, the stage and
    its DataLoader workers (the served `flows.ui` and its server work there too, but last)."""
    found = {}
    for proc in psutil.process_iter(["pid", "cwd", "cmdline", "status"]):
        command = " ".join(proc.info["cmdline"] or [])
        if (proc.info["cwd"] == str(project) and proc.info["status"] != psutil.STATUS_ZOMBIE
                and any(part in command for part in ("prefect.engine", "-m dvc", "stages."))):
            found[proc.info["pid"]] = command
    return found


def test_a_flow_run_beside_a_running_dvc_repro_fails_at_once(ui, served, tmp_path, monkeypatch):
    api, _ = ui
    project = make_project(tmp_path / "project", served, {"train.epochs": 40})
    repro = subprocess.Popen(["dvc", "repro"], cwd=project, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list((project / ".hotdog/resume").glob("finetune-*.pt")):
            assert repro.poll() is None and time.monotonic() < deadline, "dvc repro never trained"
            time.sleep(0.2)
        before = (project / "params.yaml").read_bytes()
        monkeypatch.chdir(project)
        begun = time.monotonic()
        state = hotdog_pipeline(epochs=2, return_state=True)
        assert time.monotonic() - begun < 30
        assert state.is_failed()
        assert f"another run holds this repo: PID {repro.pid} (" in state.message
        assert task_runs_of(state.state_details.flow_run_id) == {}
        assert (project / "params.yaml").read_bytes() == before  # its override was not written
        assert repro.poll() is None  # the first run goes on
    finally:
        os.killpg(repro.pid, signal.SIGINT)
        repro.wait(timeout=30)


def test_cancelling_a_flow_run_during_training_ends_it_and_every_process(ui):
    # Last in this module: it leaves the served project's training half done.
    api, project = ui
    flow_run = run_deployment(DEPLOYMENT, parameters={"epochs": 40}, timeout=0)
    deadline = time.monotonic() + 600
    while not list((project / ".hotdog/resume").glob("finetune-*.pt")):
        assert time.monotonic() < deadline, "the flow run never trained"
        time.sleep(0.2)
    processes = run_processes(project)
    assert any("stages.finetune" in command for command in processes.values()), processes
    with get_client(sync_client=True) as client:
        # What the UI's Cancel button asks for.
        client.set_flow_run_state(flow_run.id, Cancelling(message="cancelled from the test"))
        deadline = time.monotonic() + 60
        while not (state := client.read_flow_run(flow_run.id).state).is_final():
            assert time.monotonic() < deadline, f"still {state.name} after 60 s"
            time.sleep(0.5)
    assert state.is_cancelled(), state
    tasks = task_runs_of(flow_run.id)
    assert tasks["finetune"].state.is_cancelled(), tasks["finetune"].state
    assert "scratch" not in tasks
    deadline = time.monotonic() + 30
    while any(psutil.pid_exists(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = {pid: command for pid, command in run_processes(project).items() if pid in processes}
    assert left == {}, left
    assert not (project / "models/finetune.pt").exists()
