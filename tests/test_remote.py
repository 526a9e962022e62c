"""A shared DVC remote on S3: the flow pushes, a fresh clone pulls and has nothing to run.

moto's S3 server, on 127.0.0.1, plays the bucket: the real S3 API over loopback, spoken by
the real dvc-s3 and boto3. One pipeline run in all (clone A's, through the flow).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from conftest import ENV, copy_run, dvc_repro, dvc_status, sh, started, stop
from dvc.repo import Repo
from limits import E2E
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import FlowRunSort
from ruamel.yaml import YAML
from servers import free_port

from flows.pipeline import parse_args
from hotdog.core.names import STAGES
from hotdog.runner.remote import NO_REMOTE, PushFailed, push_outputs

BUCKET, PREFIX = "hotdog-remote", "team/hotdog"
KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# No credentials but these: no ~/.aws files, and no EC2 metadata lookup (no network here).
NO_KEYS = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials", "AWS_CONFIG_FILE": "/nonexistent/config"}


def without_aws(env: dict[str, str]) -> dict[str, str]:
    """env with no AWS_* variable but NO_KEYS: the machine's own settings stay out of the test."""
    return {**{k: v for k, v in env.items() if not k.startswith("AWS_")}, **NO_KEYS}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, with an empty bucket: (endpoint url, boto3 client)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  env=without_aws(ENV), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"moto exited:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"moto not listening after 60 s:\n{log.read_text()}"
                time.sleep(0.2)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)  # dvc push does not create one
        yield endpoint, client
    finally:
        stop(server)


def run(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def latest_flow_run():
    with get_client(sync_client=True) as client:
        (flow_run,) = client.read_flow_runs(limit=1, sort=FlowRunSort.START_TIME_DESC)
    return flow_run


def task_runs_of(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name: run for run in runs}


def logs_with(flow_run_id, *needed: str, timeout: float = 60) -> list[str]:
    """The run's log lines once some line holds each `needed` text (Prefect ships logs in batches)."""
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs: list[str] = []
            while page := client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                           limit=200, offset=len(logs)):
                logs += [log.message for log in page]
            if all(any(text in line for line in logs) for text in needed) or time.monotonic() > deadline:
                return logs
            time.sleep(1)


def artifact_keys_of(flow_run_id) -> set[str]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {a.key for a in artifacts}


def test_the_push_flag():
    assert parse_args(["--push"]) == {"push": True}
    assert "push" not in parse_args(["--epochs", "2"])  # the flow's default (False) then holds


def test_a_push_with_no_remote_fails_before_dvc_runs(tmp_path):
    Repo.init(str(tmp_path), no_scm=True).close()
    lines = []
    with pytest.raises(PushFailed) as err:
        push_outputs(tmp_path, lines.append)
    assert str(err.value) == NO_REMOTE and "\n" not in NO_REMOTE
    assert "`dvc remote add -d <name> s3://<bucket>/<path>`" in NO_REMOTE
    assert lines == []  # the config said so; no dvc was started


def test_a_push_without_credentials_fails_with_what_to_set(s3, tmp_path, monkeypatch):
    endpoint, _ = s3
    Repo.init(str(tmp_path), no_scm=True).close()
    (tmp_path / "weights.bin").write_bytes(b"\0" * 1024)
    sh(tmp_path, "dvc", "add", "weights.bin")  # something to push, or dvc would not ask the store
    sh(tmp_path, "dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/{PREFIX}")
    sh(tmp_path, "dvc", "remote", "modify", "storage", "endpointurl", endpoint)
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in NO_KEYS.items():
        monkeypatch.setenv(key, value)
    lines = []
    with pytest.raises(PushFailed) as err:
        push_outputs(tmp_path, lines.append)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"dvc push to remote 'storage' (s3://{BUCKET}/{PREFIX}) failed: ")
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment" in message
    assert any(line.startswith("ERROR: ") for line in lines)  # dvc's own words reached the log


@pytest.mark.timeout(E2E)
def test_a_clone_pulls_what_the_flow_pushed_and_has_nothing_to_run(s3, pipeline_run, prefect_api, tmp_path):
    endpoint, client = s3
    _, prefect_env = prefect_api
    keys = {**without_aws(prefect_env), **KEYS}

    # A's run is conftest's finished one (committed before and after it), so the flow run
    # below finds every stage current and pushes; tests/test_flow.py has runs that train.
    a = copy_run(pipeline_run, tmp_path / "a")
    before_run = sh(a, "git", "rev-parse", "HEAD~1").strip()
    # The URL and endpoint go in .dvc/config, for every clone; the credentials stay in the environment.
    sh(a, "dvc", "remote", "add", "-d", "storage", f"s3://{BUCKET}/{PREFIX}")
    sh(a, "dvc", "remote", "modify", "storage", "endpointurl", endpoint)
    sh(a, "git", "commit", "-qm", "remote", ".dvc/config")
    assert "testing" not in (a / ".dvc/config").read_text()

    flow = run(a, keys, sys.executable, "-m", "flows.pipeline", "--push")
    assert flow.returncode == 0, flow.stdout + flow.stderr
    flow_run = latest_flow_run()
    assert flow_run.state.is_completed(), flow_run.state
    tasks = task_runs_of(flow_run.id)
    assert set(tasks) == {*STAGES, "push"}
    assert all(t.state.is_completed() for t in tasks.values()), {n: t.state for n, t in tasks.items()}
    assert max(tasks[s].end_time for s in STAGES) <= tasks["push"].start_time  # after every stage
    logs = logs_with(flow_run.id, "push: the outputs are on DVC remote 'storage'")
    assert any(line.endswith(" pushed") for line in logs), logs  # dvc's own summary, streamed

    lock = YAML(typ="safe").load((a / "dvc.lock").read_text())
    (out,) = [o for o in lock["stages"]["finetune"]["outs"] if o["path"] == "models/finetune.pt"]
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    stored = {o["Key"] for o in listed.get("Contents", [])}
    assert f"{PREFIX}/files/md5/{out['md5'][:2]}/{out['md5'][2:]}" in stored, sorted(stored)
    sh(a, "git", "add", "-A")
    sh(a, "git", "commit", "-qm", "after the push", "--allow-empty")

    b = tmp_path / "b"
    sh(tmp_path, "git", "clone", "-q", str(a), str(b))
    assert not (b / "models/finetune.pt").exists()
    pulled = run(b, keys, "dvc", "pull")
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert dvc_status(b) == {}
    cloud = run(b, keys, "dvc", "status", "--cloud", "--json")
    assert cloud.returncode == 0 and json.loads(cloud.stdout) == {}, cloud.stdout + cloud.stderr
    assert started(dvc_repro(b)) == ["source"]  # DVC runs it every time; nothing after it
    assert (b / "models/finetune.pt").read_bytes() == (a / "models/finetune.pt").read_bytes()

    # B compares its commits with A's: they are the same history. A's run commit brought
    # every metric, with A's values; B's workspace is A's run exactly.
    # (On stderr, dvc notes that the first revision has no metrics files, which is the point.)
    diffed = run(b, ENV, "dvc", "metrics", "diff", before_run, "HEAD", "--json")
    assert diffed.returncode == 0, diffed.stdout + diffed.stderr
    diff = json.loads(diffed.stdout)
    finetune = json.loads((a / "metrics/finetune.json").read_text())
    assert diff["metrics/finetune.json"]["loss"] == {"old": None, "new": finetune["loss"]}
    assert "metrics/evaluate.json" in diff and "metrics/scratch.json" in diff
    assert json.loads(sh(b, "dvc", "metrics", "diff", "HEAD", "--json")) == {}

    # A teammate's clone without credentials: the stages have nothing to do, the push task
    # fails with one line naming the variables, and the run's results are still published.
    bare = run(b, without_aws(prefect_env), sys.executable, "-m", "flows.pipeline", "--push")
    assert bare.returncode == 1, bare.stdout + bare.stderr
    failed = latest_flow_run()
    assert failed.state.is_failed() and failed.id != flow_run.id
    assert "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment" in failed.state.message
    assert "\n" not in failed.state.message
    tasks = task_runs_of(failed.id)
    assert tasks["push"].state.is_failed() and "AWS_ACCESS_KEY_ID" in tasks["push"].state.message
    assert all(tasks[s].state.is_completed() for s in STAGES)
    expected = [f"{stage}: up to date, not run (nothing it uses changed since dvc.lock)" for stage in STAGES[1:]]
    logs = logs_with(failed.id, *expected)
    assert all(line in logs for line in expected)  # the flow's own words, from the stages' events
    assert {"hotdog-metrics", "hotdog-report"} <= artifact_keys_of(failed.id)
