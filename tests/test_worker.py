"""`make worker`'s pool, deployments and worker against a real Prefect server (conftest's
prefect_api), with runs started through the API as the UI's Run button starts them; and Ctrl-C
on `make ui`, whose way of starting and stopping a server (hotdog/runner/prefect_server.py)
`make worker` shares."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil
import pytest
from conftest import ENV, REPO, copy_run, dvc_repro, started, stop
from limits import E2E
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings
from servers import free_port

from hotdog.runner import worker
from hotdog.runner.worker import PROJECT_ENV, WorkerError, enter_project

PIPELINE = "hotdog-pipeline/worker"
EXPERIMENTS = "hotdog-experiments/worker"
RUN_TIMEOUT = 600  # seconds for both runs; the tiny pipeline takes about a minute


def final_states(*flow_run_ids, timeout: float = RUN_TIMEOUT, process: subprocess.Popen, log: Path) -> list:
    """The flow runs once every one has ended (the worker must stay up meanwhile)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(run_id) for run_id in flow_run_ids]
            if all(run.state.is_final() for run in runs):
                return runs
            assert process.poll() is None, f"the worker exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{[r.state.name for r in runs]} after {timeout} s:\n{log.read_text()}"
            time.sleep(1)


def wait_for_worker(pool: str, name: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until the worker has told the server it polls the pool."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while name not in {w.name for w in client.read_workers_for_work_pool(pool)}:
            assert process.poll() is None, f"the worker exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no worker {name!r} after {timeout} s:\n{log.read_text()}"
            time.sleep(0.5)


def artifacts_of(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key: a for a in artifacts}


@pytest.mark.timeout(E2E)
def test_a_run_from_the_api_runs_on_the_worker_in_its_clone_one_at_a_time(prefect_api, pipeline_run, tmp_path):
    _, env = prefect_api
    # A finished run: the worker's flow run finds every stage current (tests/test_flow.py
    # has flow runs that train), so what is tested here is where and when it runs.
    project = copy_run(pipeline_run, tmp_path / "project")
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}  # the worker polls every 10 s by default
    pool = worker.prepare(project, env)  # what `make worker` does before it starts the worker
    assert pool == "hotdog"
    assert worker.ensure_pool(pool) is False  # a second `make worker` finds the pool and keeps it
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(pool).type == "process"
        for name in (PIPELINE, EXPERIMENTS):
            deployment = client.read_deployment_by_name(name)
            assert deployment.work_pool_name == pool
            assert deployment.pull_steps == [{"hotdog.runner.worker.enter_project": {}}]  # no path, no git

    log = tmp_path / "worker.log"
    with log.open("w") as out:
        # Its own session, so that it and its flow runs are stopped with it.
        process = worker.start_worker(project, pool, env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
    try:
        name = worker.worker_name(project)
        wait_for_worker(pool, name, process, log)
        # Two runs at once, as two clicks on Run make them. The second has a bad key, so it
        # fails the moment it starts: its start shows whether the worker waited for the first.
        first = run_deployment(PIPELINE, parameters={}, timeout=0)
        second = run_deployment(PIPELINE, parameters={"params": {"train.epoch": 2}}, timeout=0)
        first, second = final_states(first.id, second.id, process=process, log=log)
    finally:
        stop(process, group=True)
    worker_log = log.read_text()

    assert first.state.is_completed(), f"{first.state}\n{worker_log}"
    assert first.work_pool_name == pool
    # The worker took it, and ran it as its child: the flow run's output is in the worker's.
    assert f"Worker '{name}' submitting flow run '{first.id}'" in worker_log
    assert f"Flow run '{first.name}' - Finished in state Completed()" in worker_log
    artifacts = artifacts_of(first.id)
    assert {"hotdog-metrics", "hotdog-report", "hotdog-progress", "hotdog-link-report",
            "hotdog-link-plots", "hotdog-figures"} <= set(artifacts)
    # It worked in the worker's clone, which the pull step entered.
    assert f"({(project / 'reports/report.md').as_uri()})" in artifacts["hotdog-link-report"].data
    assert started(dvc_repro(project)) == ["source"]  # DVC runs it every time; nothing after it

    assert second.state.is_failed(), second.state
    assert "unknown key 'train.epoch'" in second.state.message  # not "another run holds this repo"
    assert second.start_time >= first.end_time, (second.start_time, first.end_time)
    assert f"Worker '{name}' submitting flow run '{second.id}'" in worker_log


def test_the_pull_step_enters_the_workers_clone_and_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv(PROJECT_ENV, raising=False)
    with pytest.raises(WorkerError, match=f"{PROJECT_ENV} is not set.*make worker"):
        enter_project()
    monkeypatch.setenv(PROJECT_ENV, str(tmp_path))
    with pytest.raises(WorkerError, match="not a clone of the hotdog repo"):
        enter_project()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(Path(tmp_path.anchor))
    assert enter_project() == {"directory": str(tmp_path)}
    assert Path.cwd() == tmp_path


def wait_until_served(api: str, process: subprocess.Popen, log: Path, timeout: float = 100) -> None:
    """Until `make ui`'s runner has polled the server for its deployments' runs: from then on,
    its shutdown pauses them through the API."""
    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, f"flows.ui exited:\n{log.read_text()}"
            try:
                if client.read_deployment_by_name("hotdog-pipeline/local").status.value == "READY":
                    return
            except Exception:  # the server is not up yet, or the deployment not registered
                pass
            time.sleep(0.5)
    raise AssertionError(f"make ui served nothing after {timeout} s:\n{log.read_text()}")


def test_ctrl_c_stops_make_ui_and_the_server_it_started(tmp_path):
    api = f"http://127.0.0.1:{free_port()}/api"
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        # Its own session and group, as a terminal runs `make ui`: Ctrl-C there is a SIGINT to
        # the whole foreground group. PREFECT_HOME: the server's database, in tmp_path.
        process = subprocess.Popen([sys.executable, "-m", "flows.ui"], cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**ENV, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path)})
    server = None
    try:
        wait_until_served(api, process, log)
        server, = (p for p in psutil.Process(process.pid).children() if "server" in p.cmdline())
        os.killpg(process.pid, signal.SIGINT)
        # It used to hang here for a minute: its server had the Ctrl-C too, and the runner
        # retried pausing its deployments through the dead API.
        assert process.wait(timeout=30) == 0, log.read_text()
        assert not server.is_running(), log.read_text()
        with pytest.raises(ConnectionRefusedError):  # nothing listens on the server's port
            socket.create_connection(("127.0.0.1", urlparse(api).port), timeout=5).close()
    finally:
        if process.poll() is None:
            stop(process, seconds=5, group=True)
        if server is not None and server.is_running():
            server.kill()


@pytest.mark.filterwarnings("ignore:Artifact creation outside of a flow:FutureWarning")  # the test makes its own
def test_a_failed_progress_update_is_one_warning_and_the_run_goes_on(prefect_api, caplog, monkeypatch):
    # The pipeline flow updates its progress bar on every Progress event, a tenth of an epoch
    # apart, from inside dvc's output loop: an API error there stopped dvc and the training.
    # Against the real server: an update that works, then one the API refuses (no such artifact).
    import logging
    from uuid import uuid4

    from prefect.artifacts import create_progress_artifact
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterId

    from hotdog.runner import artifacts
    from hotdog.runner.artifacts import update_progress

    api, _ = prefect_api
    logger = logging.getLogger("hotdog-test-progress")
    with temporary_settings(updates={PREFECT_API_URL: api}), caplog.at_level(logging.WARNING, logger.name):
        bar = create_progress_artifact(0.0, key="hotdog-test-progress")
        update_progress(bar, 42.123, logger)
        with get_client(sync_client=True) as client:
            [moved] = client.read_artifacts(artifact_filter=ArtifactFilter(id=ArtifactFilterId(any_=[bar])))
        assert moved.data == 42.12  # the bar moved
        gone = uuid4()
        calls = []
        real = artifacts.update_progress_artifact
        monkeypatch.setattr(artifacts, "update_progress_artifact", lambda *args: calls.append(args) or real(*args))
        for percent in (10.0, 20.0, 30.0):
            update_progress(gone, percent, logger)  # no exception
    assert len(calls) == 1  # after a failure the bar is left alone a while: a slow API must not slow the run
    warnings = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert len(warnings) == 1 and warnings[0].startswith("the progress bar could not be updated (")
    assert warnings[0].endswith("the run goes on, and the bar may stand still")


@pytest.mark.timeout(E2E)
def test_cancelling_a_run_that_no_runner_started_stops_its_training(prefect_api, pipeline_run, tmp_path):
    # `python -m flows.pipeline` has no runner or worker to signal it when the UI's Cancel is
    # pressed: it trained on, ran every stage after, and stayed Cancelling for good.
    from prefect.states import Cancelling

    api, env = prefect_api
    project = copy_run(pipeline_run, tmp_path / "project")
    run = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--epochs", "40"], cwd=project, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (stage := [p for p in psutil.process_iter(["cmdline", "cwd"]) if p.info["cwd"] == str(project)
                             and "stages.finetune" in " ".join(p.info["cmdline"] or [])]):  # finetune has started
            assert run.poll() is None and time.monotonic() < deadline, run.stdout.read() if run.poll() else "slow"
            time.sleep(0.2)
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            [flow_run] = [r for r in client.read_flow_runs() if r.state is not None and r.state.is_running()]
            client.set_flow_run_state(flow_run.id, Cancelling(message="cancelled from the test"))
            assert run.wait(timeout=60) == 1, run.stdout.read()
            final = client.read_flow_run(flow_run.id).state
            tasks = {t.name: t for t in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
                any_=[flow_run.id])))}
        assert final.is_cancelled(), final
        assert tasks["finetune"].state.is_cancelled() and "scratch" not in tasks, {n: t.state for n, t in tasks.items()}
        psutil.wait_procs(stage, timeout=30)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in stage)
        assert not (project / "models/finetune.pt").exists()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
