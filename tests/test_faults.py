"""Faults through the real `dvc`: a killed run resumes, Ctrl-C stops cleanly, two runs at once.

Each test starts from a copy of one reference run of the tiny pipeline on the synthetic
data, with finetune made stale. It trains 6 epochs of 2 batches, so a test can
act between its first saved epoch and its end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from conftest import ENV, copy_run, dvc_repro, dvc_status, sh, started, write_params
from limits import E2E
from ruamel.yaml import YAML

from hotdog.core import events

pytestmark = pytest.mark.timeout(E2E)  # whole pipeline runs, through dvc or Prefect
EPOCHS = 6
TIMING = ("examples_per_sec", "examples_per_sec_wall", "epoch_seconds", "train_seconds")


def start(project: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """`dvc <args>` in a session of its own, as a terminal runs a command; output to a log."""
    log = project.parent / f"{project.name}-{'-'.join(args).replace('/', '_')}-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["dvc", *args], cwd=project, env=ENV, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return proc, log


def wait_for(what: str, check, proc: subprocess.Popen, log: Path, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        assert proc.poll() is None, f"exited ({proc.returncode}) before {what}:\n{log.read_text()}"
        time.sleep(0.02)
    raise AssertionError(f"no {what} after {timeout} s:\n{log.read_text()}")


def saved_state(project: Path, run: str = "finetune"):
    """The resumable state a training stage has saved, once one exists."""
    return next((project / ".hotdog/resume").glob(f"{run}-*.pt"), None)


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def processes_in(project: Path) -> list[str]:
    """Processes working in the project (dvc, its stages, their workers)."""
    found = []
    for proc in psutil.process_iter(["pid", "cwd", "cmdline", "status"]):
        if proc.info["cwd"] == str(project) and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(f"{proc.info['pid']}: {' '.join(proc.info['cmdline'] or [])}")
    return found


def results(project: Path, run: str = "finetune") -> tuple[dict, list[dict], dict]:
    """A training stage's summary and epochs (timing aside) and its checkpoint's tensors."""
    summary = json.loads((project / f"metrics/{run}.json").read_text())
    epochs = json.loads((project / f"metrics/{run}_epochs.json").read_text())
    checkpoint = torch.load(project / f"models/{run}.pt", weights_only=True)
    return ({k: v for k, v in summary.items() if k not in TIMING},
            [{k: v for k, v in e.items() if k not in TIMING} for e in epochs], checkpoint["state_dict"])


def assert_same(a, b) -> None:
    assert a[0] == b[0] and a[1] == b[1]
    assert a[2].keys() == b[2].keys() and all(torch.equal(v, b[2][k]) for k, v in a[2].items())


@pytest.fixture(scope="module")
def reference(pipeline_run, tmp_path_factory):
    """A project run once, never interrupted, and committed: (project, finetune's results).
    Every test below starts from a copy of it with training made stale again. It starts
    from conftest's finished run, so only what train.epochs changes runs here."""
    project = copy_run(pipeline_run, tmp_path_factory.mktemp("faults") / "project")
    write_params(project / "params.yaml", {**pipeline_run.overrides, "train.epochs": EPOCHS})
    sh(project, "dvc", "repro")
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "reference run")
    return project, results(project)


def stale_copy(reference, tmp_path: Path) -> Path:
    """A copy of the reference project whose finetune stage must run again."""
    project = tmp_path / "project"
    sh(tmp_path, "cp", "-a", str(reference[0]), str(project))
    lock = YAML(typ="safe").load((project / "dvc.lock").read_text())
    del lock["stages"]["finetune"]  # never recorded: DVC must run it
    (project / "models/finetune.pt").unlink()
    YAML(typ="safe").dump(lock, project / "dvc.lock")
    sh(project, "rm", "-rf", ".dvc/cache/runs")  # else DVC restores the reference's outputs
    return project


def test_a_killed_dvc_repro_resumes_at_the_next_epoch(reference, tmp_path):
    project = stale_copy(reference, tmp_path)
    proc, log = start(project, "repro")
    state = wait_for("saved epoch", lambda: saved_state(project), proc, log)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole session: dvc, the stage, its workers
    proc.wait()
    assert torch.load(state, weights_only=True)["snapshot"]["epoch"] < EPOCHS
    assert not (project / "models/finetune.pt").exists()

    again = dvc_repro(project)
    assert "finetune: resuming at epoch" in again
    resumed_at = int(again.split("finetune: resuming at epoch ")[1].split("/")[0])
    assert resumed_at >= 2 and f"finetune epoch {resumed_at - 1}/{EPOCHS}: loss" not in again
    assert "finetune" in started(again) and "scratch" not in started(again)
    assert_same(results(project), reference[1])
    assert saved_state(project) is None
    assert dvc_status(project) == {}


def test_a_killed_dvc_exp_run_resumes_at_the_next_epoch(reference, tmp_path):
    project = stale_copy(reference, tmp_path)
    sh(project, "git", "add", "-A")
    sh(project, "git", "commit", "-qm", "training stale")
    proc, log = start(project, "exp", "run")
    wait_for("saved epoch", lambda: saved_state(project), proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    again = sh(project, "dvc", "exp", "run")
    assert "finetune: resuming at epoch" in again, again
    assert_same(results(project), reference[1])
    shown = json.loads(sh(project, "dvc", "exp", "show", "--json"))
    assert shown, "the resumed run is recorded as an experiment"


def test_ctrl_c_stops_dvc_repro_cleanly_and_the_next_run_needs_no_cleanup(reference, tmp_path):
    project = stale_copy(reference, tmp_path)
    proc, log = start(project, "repro")
    wait_for("training", lambda: "finetune epoch 1/" in log.read_text(), proc, log)
    stopped_at = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    code = proc.wait(timeout=10)
    assert time.monotonic() - stopped_at < 10
    assert code != 0
    text = log.read_text()
    assert "error: finetune: stopped by SIGINT" in text
    deadline = time.monotonic() + 10
    while not group_gone(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_gone(proc.pid) and processes_in(project) == [], processes_in(project)
    assert not (project / "models/finetune.pt").exists()
    assert not list((project / "models").glob(".*tmp*"))

    again = dvc_repro(project, "finetune")  # no lock to remove by hand
    assert started(again) == ["source", "finetune"]
    assert_same(results(project), reference[1])


def test_sigterm_to_dvc_alone_stops_its_stage_too(reference, tmp_path):
    # `kill <dvc pid>` ends dvc at once; its stage sees its parent go and stops itself.
    project = stale_copy(reference, tmp_path)
    proc, log = start(project, "repro")
    wait_for("training", lambda: "finetune epoch 1/" in log.read_text(), proc, log)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while processes_in(project) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(project) == []
    assert "error: finetune: stopped by SIGTERM" in log.read_text()


def test_a_second_dvc_repro_fails_at_once_and_the_first_is_unharmed(reference, tmp_path):
    project = stale_copy(reference, tmp_path)
    first, first_log = start(project, "repro")
    wait_for("training", lambda: "finetune epoch 1/" in first_log.read_text(), first, first_log)

    # A second `dvc repro` gets as far as its first stage, source, which DVC runs every time
    # and whose output no stage of the first run holds; hotdog's run lock stops it there, in
    # one line, before it writes anything.
    begun = time.monotonic()
    second = subprocess.run(["dvc", "repro"], cwd=project, env={**ENV, events.ENV: "1"}, capture_output=True,
                            text=True, timeout=60)
    out = second.stdout + second.stderr
    assert second.returncode != 0 and time.monotonic() - begun < 30, out
    assert started(out) == ["source"], out
    failed = [e for e in map(events.parse, out.splitlines()) if isinstance(e, events.Failed)]
    assert [e.stage for e in failed] == ["source"]
    assert failed[0].message.startswith(f"error: source: another run holds this repo: PID {first.pid} (")
    # Past DVC (a stage run by hand, or a flow: tests/test_flow.py), hotdog's run lock
    # refuses it in one line, before the stage does anything.
    third = subprocess.run(["python", "-m", "stages.scratch"], cwd=project, env=ENV, capture_output=True,
                           text=True, timeout=60)
    assert third.returncode == 1
    assert third.stderr.splitlines() == [third.stderr.strip()], third.stderr
    assert third.stderr.startswith(f"error: scratch: another run holds this repo: PID {first.pid} (")
    assert "wait for it to finish, or stop it" in third.stderr and "scratch epoch" not in third.stdout

    assert first.wait(timeout=600) == 0, first_log.read_text()
    assert_same(results(project), reference[1])
    assert dvc_status(project) == {}
