"""The lanes and the limits (tests/lanes.py, tests/limits.py): what makes a test slow is read
from what it uses; a stuck test fails at its limit and ends what it started; a run leaves no
process behind."""

from __future__ import annotations

import importlib
import os
import subprocess
import time
import uuid
from pathlib import Path

import lanes
import psutil
import pytest
from servers import serve_directory

# Imported now, not under the guard: importing torch runs ldconfig. stages._training imports
# the training code only when it trains, so that is imported here too.
import hotdog.training.train  # noqa: F401
import stages._training  # noqa: F401
import stages.decode  # noqa: F401

TESTS = Path(__file__).resolve().parent


# ---------------------------------------------------------------- what the reading sees


def _pure(x: int) -> int:
    return x + 1


def _spawns() -> None:
    subprocess.run(["true"], check=True)


def _serves(root: Path) -> None:
    with serve_directory(root):
        pass


def _through_a_helper() -> None:
    _pure(1)
    _spawns()


def _imports_a_stage_and_trains() -> None:
    from stages import _training

    _training.main("finetune")


def _decodes() -> None:
    from stages import decode

    decode.main()  # a process pool per split


# Held in a dict: a test that named them directly would itself be read as using them.
SAMPLES = {f.__name__: f for f in (_pure, _spawns, _serves, _through_a_helper, _imports_a_stage_and_trains,
                                    _decodes)}


def test_the_reading_names_what_makes_code_slow(request):
    assert request.node.get_closest_marker("slow") is None  # this test is in the fast lane
    assert lanes.reason(SAMPLES["_pure"]) is None
    assert lanes.reason(SAMPLES["_spawns"]) == "a subprocess (through _spawns)"
    assert lanes.reason(SAMPLES["_serves"]).startswith("a server")
    assert lanes.reason(SAMPLES["_through_a_helper"]) == "a subprocess (through _spawns) (through _through_a_helper)"
    assert lanes.reason(SAMPLES["_imports_a_stage_and_trains"]).startswith("a training run")
    assert lanes.reason(SAMPLES["_decodes"]).startswith("a subprocess")


def test_the_shared_fixtures_are_read_through(request):
    conftest = importlib.import_module("conftest")
    assert lanes.reason(conftest.pipeline_run.__wrapped__).startswith("a subprocess")
    assert lanes.reason(conftest.prefect_api.__wrapped__).startswith("a subprocess")
    assert lanes.reason(conftest.served.__wrapped__).startswith("a server")
    assert lanes.reason(conftest.decoded_project.__wrapped__).startswith("a subprocess")
    assert lanes.reason(conftest.tiny_project.__wrapped__) is None
    # and a test is marked by its fixtures: these two ask for them.
    items = {item.name: item for item in request.session.items}
    for name, words in [("test_a_stuck_test_fails_at_its_limit_and_leaves_no_process[xdist]", "fixture pytester"),
                        ("test_the_reading_names_what_makes_code_slow", None)]:
        if name in items:  # (deselected in the fast lane)
            mark = items[name].get_closest_marker("slow")
            assert (mark and mark.kwargs["reason"]) == (words and f"a pytest run in a subprocess ({words})")


def test_a_fast_test_that_starts_a_process_anyway_fails_at_once():
    # Looked up at run time, so the reading cannot see it: the guard must.
    run = getattr(importlib.import_module("subprocess"), "run")
    with pytest.raises(lanes.Unmarked, match="not marked slow, yet it starts a subprocess"):
        run(["true"])
    listen = getattr(importlib.import_module("socket"), "socket")
    with listen() as s, pytest.raises(lanes.Unmarked, match="a server"):
        s.bind(("127.0.0.1", 0))
        s.listen()


# ---------------------------------------------------------------- whole pytest runs

STUCK = '''
import subprocess
import pytest

@pytest.mark.timeout(3)
def test_stuck():
    # a daemon that leaves its parent (the limit must still find it), then a child that sleeps
    subprocess.run(["sh", "-c", "sleep {lost} &"], check=True)
    subprocess.run(["sleep", "{stuck}"])

def test_after():
    pass
'''

LEAKS = '''
import subprocess

def test_leaves_a_process():
    subprocess.Popen(["sleep", "{leaked}"])

def test_leaves_a_daemon():
    subprocess.run(["sh", "-c", "sleep {lost} &"], check=True)
'''

HELPER = '''
import multiprocessing
import time
from multiprocessing import resource_tracker

import psutil

def test_uses_shared_memory():
    multiprocessing.get_context("spawn").Lock()  # a semaphore: the resource tracker serves it
    resource_tracker.ensure_running()
    # Its process, whether this one started it or found it running (a full suite's run once
    # saw no child here: the tracker was already up). Its command line can read empty for a
    # moment, while the new process is still exec'ing Python (a full suite once saw that).
    tracker = psutil.Process(resource_tracker._resource_tracker._pid)
    deadline = time.monotonic() + 10
    while not tracker.cmdline() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "resource_tracker" in " ".join(tracker.cmdline())
'''


def running(*marks: str) -> list[str]:
    """Command lines of live processes that hold one of `marks`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        line = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] != psutil.STATUS_ZOMBIE and any(m in line for m in marks):
            found.append(line)
    return found


def marks() -> tuple[str, ...]:
    """Sleep lengths no other process on the machine will have (seconds, unique per call)."""
    n = 3000 + uuid.uuid4().int % 5000
    return str(n), str(n + 0.5)


def run_pytest(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_it=source)
    pytester.makeconftest('pytest_plugins = ("limits",)\n')  # the limits alone: no lanes guard
    with pytest.MonkeyPatch.context() as m:
        m.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_stuck_test_fails_at_its_limit_and_leaves_no_process(pytester, workers):
    stuck, lost = marks()
    start = time.monotonic()
    result = run_pytest(pytester, STUCK.format(stuck=stuck, lost=lost), *workers)
    took = time.monotonic() - start
    out = result.stdout.str()
    result.assert_outcomes(failed=1, passed=1)
    assert "test_it.py::test_stuck: the test ran past its limit of 3 s" in out
    assert f"sleep {stuck}" in out and f"sleep {lost}" in out  # the tree it dumped
    assert 'subprocess.run(["sleep"' in out  # where it was stuck
    assert took < 60, out
    assert running(f"sleep {stuck}", f"sleep {lost}") == []


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_what_a_run_leaves_behind_is_ended_and_fails_it(pytester, workers):
    leaked, lost = marks()
    result = run_pytest(pytester, LEAKS.format(leaked=leaked, lost=lost), *workers)
    err = result.stderr.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str() + err
    result.assert_outcomes(passed=2)
    assert "left behind by the tests, now ended" in err
    assert f"sleep {leaked}" in err and f"sleep {lost}" in err
    assert running(f"sleep {leaked}", f"sleep {lost}") == []


def test_multiprocessings_own_helper_is_not_a_leftover(pytester):
    # A process pool in pytest itself starts multiprocessing's resource tracker, which lives
    # as long as pytest does: not something a test left behind.
    result = run_pytest(pytester, HELPER)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    assert "left behind" not in result.stderr.str()
