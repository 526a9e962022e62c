"""Shared fixtures: a shrunk params file and synthetic data sets, all offline."""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import limits  # noqa: F401  (first: it marks this process's environment, which ENV below copies)
import pytest
from ruamel.yaml import YAML
from servers import serve_directory
from synthetic import dataset_files, write_tree, write_weights, write_zip

# The lanes (what makes a test slow) and the time limits: tests/lanes.py, tests/limits.py.
pytest_plugins = ("lanes", "limits", "pytester")

REPO = Path(__file__).resolve().parents[1]
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def pytest_report_header(config) -> list[str]:
    """The CPU and the ISA caps of this run: what torch computes depends on both."""
    import torch

    from hotdog.model.hardware import cpu_model, isa_summary

    caps = " ".join(f"{k}={os.environ[k]}" for k in ISA_CAPS if k in os.environ) or "none"
    return [f"cpu: {cpu_model()} ({isa_summary()}), {os.cpu_count()} cores; torch {torch.__version__}, "
            f"ATen capability {torch.backends.cpu.get_cpu_capability()}; ISA caps: {caps}"]


# The shrunk config every training test starts from (lightning-hydra-template's idea):
# 32 px, 1 epoch, tiny batches, CPU, fp32 unless a test asks otherwise. Precision is
# pinned: `auto` would run bf16 on one CPU and fp32 on another.
TINY = {
    "train.epochs": 1,
    "train.batch_size": 4,
    "train.image_size": 32,
    "train.device": "cpu",
    "train.precision": "fp32",
    "runtime.num_workers": 0,
    "manifest.max_reject_fraction": 0.2,
}


def repo_params() -> dict:
    """The repo's params.yaml as plain data."""
    return YAML(typ="safe").load((REPO / "params.yaml").read_text())


def with_overrides(params: dict, overrides: dict) -> dict:
    """A copy of params with dotted keys ("train.epochs") set."""
    params = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value
    return params


def write_params(dest: Path, overrides: dict | None = None) -> Path:
    """Write a params.yaml at dest: the repo's, shrunk by TINY, then `overrides`."""
    params = with_overrides(repo_params(), {**TINY, **(overrides or {})})
    YAML().dump(params, dest)
    return dest


@pytest.fixture
def tiny_project(tmp_path, monkeypatch) -> Path:
    """A folder with a tiny params.yaml and an extracted synthetic data set; cwd is it."""
    write_params(tmp_path / "params.yaml")
    write_tree(tmp_path / "data", dataset_files({"train": 6, "test": 4}, corrupt=1))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def decoded_project(tiny_project):
    """The tiny project with stand-in weights, its manifests and its decoded images."""
    from stages import decode, manifest

    write_weights(tiny_project / "data/weights/resnet18.pth")
    manifest.main()
    decode.main()
    return tiny_project


# ---------------------------------------------------------------- whole-project tests

# A shell that starts a command in the background without job control (`make test &` in a
# script, nohup-style CI runners) starts it with SIGINT ignored, and every process a test
# starts would inherit that: the tests that press Ctrl-C on a `dvc repro` then see it run
# on to the end. A handler here is reset to the default in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# OMP_NUM_THREADS=1: the processes a test starts (dvc, its stages, servers) train and score
# on one thread. Two pytest workers share the two cores already; with two OpenMP threads in
# each stage beside the other worker's, they spin and wait on each other. make test's main
# run took 521 s with this against 776 s without, on the same Xeon (2026-12-07; the second
# run also had a lighter gpu.sh smoke test, which accounts for a little of it). The pytest
# workers keep torch's default, so the tests that train in-process still fork DataLoader
# workers from a multithreaded torch.
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
       "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", "OMP_NUM_THREADS": "1"}


def sh(cwd: Path, *args: str) -> str:
    """Run a command (no shell); fail the test with its output if it fails."""
    run = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


def dvc_status(project: Path) -> dict:
    """`dvc status --json`, less the stages DVC runs every time (always_changed in dvc.yaml: the
    source stage, which records what data.url holds), which it lists as "always changed"."""
    status = json.loads(sh(project, "dvc", "status", "--json"))
    return {stage: why for stage, why in status.items() if why != ["always changed"]}


def dvc_repro(cwd: Path, *args: str) -> str:
    """`dvc repro <args>` with the stages' events on, as the flow runs it; its output. Fails
    the test, showing the output, if dvc fails. started() reads the events in it; DVC's own
    lines there are for people."""
    from hotdog.core import events

    run = subprocess.run(["dvc", "repro", *args], cwd=cwd, env={**ENV, events.ENV: "1"},
                         capture_output=True, text=True)
    assert run.returncode == 0, f"dvc repro {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout + run.stderr


def started(output: str) -> list[str]:
    """The stages whose command began, in order, from their Started events in dvc_repro's
    output; what DVC itself printed there is not read."""
    from hotdog.core import events

    return [e.stage for e in map(events.parse, output.splitlines()) if isinstance(e, events.Started)]


def copy_project(dest: Path) -> Path:
    """The repo's files (tracked, or new and not ignored) in a fresh git repo, as a clone has them."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    for rel in listed.stdout.split():
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    sh(dest, "git", "init", "-q")
    return dest


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """hotdog.zip and a stand-in weights file on a local HTTP server: (url, sha1, url, sha256)."""
    root = tmp_path_factory.mktemp("served")
    sha1 = write_zip(root / "hotdog.zip", dataset_files({"train": 8, "test": 6}, corrupt=1))
    sha256 = write_weights(root / "resnet18-stand-in.pth")
    with serve_directory(root) as base:
        yield f"{base}/hotdog.zip", sha1, f"{base}/resnet18-stand-in.pth", sha256


def served_overrides(served) -> dict:
    """Params that point the pipeline at the served files, shrunk further for speed."""
    data_url, sha1, weights_url, sha256 = served
    return {"data.url": data_url, "data.sha1": sha1, "weights.url": weights_url,
            "weights.sha256": sha256[:8], "train.batch_size": 8, "runtime.num_workers": 1}


def make_project(dest: Path, served, overrides: dict | None = None) -> Path:
    """A fresh copy of the project whose tiny params.yaml points at the served files."""
    copy_project(dest)
    write_params(dest / "params.yaml", {**served_overrides(served), **(overrides or {})})
    return dest


class PipelineRun(NamedTuple):
    project: Path  # copy it with copy_run; never change it
    overrides: dict  # what its params.yaml sets on top of the repo's and TINY
    output: str  # what its `dvc repro` printed, the stages' events among it (see started)


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, worker_id) -> PipelineRun:
    """The tiny project (the served set's files, from local paths) committed, run once with
    the real `dvc repro`, and committed again: made once for all pytest workers, under a
    file lock, for the tests that start from a finished run. A whole run is about a minute
    here, mostly eight stage processes importing torch."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # the workers' common folder
    root = shared / "pipeline-run"
    with FileLock(str(shared / "pipeline-run.lock")):
        if not (root / "overrides.json").exists():
            shutil.rmtree(root, ignore_errors=True)
            files = root / "files"
            files.mkdir(parents=True)
            sha1 = write_zip(files / "hotdog.zip", dataset_files({"train": 8, "test": 6}, corrupt=1))
            sha256 = write_weights(files / "resnet18-stand-in.pth")
            overrides = {"data.url": str(files / "hotdog.zip"), "data.sha1": sha1,
                         "weights.url": str(files / "resnet18-stand-in.pth"), "weights.sha256": sha256[:8],
                         "train.batch_size": 8, "runtime.num_workers": 1}
            project = copy_project(root / "project")
            write_params(project / "params.yaml", overrides)
            sh(project, "git", "add", "-A")
            sh(project, "git", "commit", "-qm", "project")
            (root / "repro.log").write_text(dvc_repro(project))
            sh(project, "git", "add", "-A")
            sh(project, "git", "commit", "-qm", "pipeline run")
            (root / "overrides.json").write_text(json.dumps(overrides))
    return PipelineRun(root / "project", json.loads((root / "overrides.json").read_text()),
                       (root / "repro.log").read_text())


def copy_run(run: PipelineRun, dest: Path) -> Path:
    """A copy of the finished run's project at dest: its git history, DVC cache and outputs."""
    shutil.copytree(run.project, dest, symlinks=True)
    return dest


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real Prefect server on a free loopback port, with its own PREFECT_HOME, for the
    tests that need one beside `make ui`'s (tests/test_flow.py starts that one itself):
    (api url, the environment for subprocesses that should use it). One per test file: an
    idle server still takes a tenth of a core, which a session-long one would hold to the end."""
    import socket

    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    from hotdog.runner.prefect_server import start_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=str(home))  # the server's database too
    try:
        # Its log goes to the settings' PREFECT_HOME, which the environment no longer sets
        # once prefect is imported.
        with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_HOME: str(home)}):
            server, log = start_server(api)
            assert log.parent == home, log
            try:
                yield api, {**ENV, "PREFECT_API_URL": api, "PREFECT_HOME": str(home)}
            finally:
                stop(server)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def stop(process: subprocess.Popen, seconds: float = 30, group: bool = False) -> None:
    """Stop a server a test started: SIGTERM, then SIGKILL if it outlives `seconds`. With
    `group`, its whole process group (one started with start_new_session=True)."""
    import signal

    send = (lambda sig: os.killpg(process.pid, sig)) if group else process.send_signal
    send(signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait()
