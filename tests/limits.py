"""Every test runs under a time limit, and no run leaves a process or a bound port behind.

A test's limit is `@pytest.mark.timeout(seconds)`, or FAST / SLOW by its lane (tests/lanes.py).
Its setup may take SETUP longer: a shared fixture (the finished pipeline run, a Prefect
server) is built inside the setup of the first test that asks for it.

Past its limit, a test fails with its name and where it was stuck, the tree of processes it
started, and those processes ended. The processes are found two ways: this process's
descendants, and any process whose environment carries MARK with this process's value, which
catches what a test started and then lost (a daemon that detached itself, as DVC's queue
worker did). When the session ends, the same sweep runs once more: whatever is left is
ended and listed, and the run fails.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

import psutil
import pytest

FAST = 20.0  # seconds: a unit test runs in milliseconds; this only catches a hang
SLOW = 120.0  # a test with processes or servers; longer ones say so with their own mark
# Named limits for the end-to-end tests: `@pytest.mark.timeout(E2E)`. Four times the longest
# such test here (a flow run served by `make ui`, about 2 min on a 2-core Zen 3).
E2E = 480.0
SETUP = 300.0  # added to the setup phase: the shared pipeline run is built there, once
TEARDOWN = 60.0  # stopping servers: SIGTERM, up to 30 s, then SIGKILL
GRACE = 30.0  # past the limit, if the test still has not stopped, the worker ends itself

MARK = "HOTDOG_TEST_RUN"
os.environ[MARK] = str(os.getpid())  # at import: conftest's ENV copies os.environ after this
LEFT = "hotdog_left_behind"  # xdist's workeroutput key for what a worker swept at its end


def limit_of(item: pytest.Item) -> float:
    """The test's own limit, or its lane's."""
    mark = item.get_closest_marker("timeout")
    if mark is not None:
        return float(mark.args[0])
    return SLOW if item.get_closest_marker("slow") is not None else FAST


# ---------------------------------------------------------------- finding what a test started


# multiprocessing's own helpers for this interpreter (started by a process pool or a
# DataLoader run in pytest itself): they end when pytest does, and hold nothing of a test's.
HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


def _helper(proc: psutil.Process) -> bool:
    try:
        return proc.ppid() == os.getpid() and any(h in " ".join(proc.cmdline()) for h in HELPERS)
    except psutil.Error:
        return False


def started(since: float = 0.0) -> list[psutil.Process]:
    """Live processes this one started (descendants, or carrying MARK with our value) since
    `since` (a time.time()), parents before children; not multiprocessing's HELPERS."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True) if not _helper(p)}
    mine = os.environ[MARK]
    for proc in psutil.process_iter(["pid"]):
        if proc.pid != me.pid and proc.pid not in found and not _helper(proc):
            try:
                if proc.environ().get(MARK) == mine:
                    found[proc.pid] = proc
            except (psutil.Error, OSError):
                continue  # gone, or not ours to read
    alive = []
    for proc in found.values():
        try:
            if proc.create_time() >= since - 1 and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.Error:
            continue
    return sorted(alive, key=lambda p: _depth(p))


def _depth(proc: psutil.Process) -> int:
    try:
        return len(proc.parents())
    except psutil.Error:
        return 0


def tree_text(procs: list[psutil.Process]) -> str:
    """One line per process: pid, parent, and its command line, indented by depth."""
    if not procs:
        return "  (none)"
    top = min(_depth(p) for p in procs)
    lines = []
    for proc in procs:
        try:
            command = " ".join(proc.cmdline())[:300] or proc.name()
            lines.append(f"  {'  ' * (_depth(proc) - top)}{proc.pid} (parent {proc.ppid()}): {command}")
        except psutil.Error:
            continue
    return "\n".join(lines)


def end(procs: list[psutil.Process]) -> None:
    """SIGKILL each (children first, so none is re-parented mid-way and missed), then reap."""
    for proc in reversed(procs):
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)
    _reap()


def _reap() -> None:
    """Collect this process's exited children, so none stays a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def listening_ports() -> list[str]:
    """The TCP ports this process itself still listens on (a server thread left running)."""
    try:
        conns = psutil.Process().net_connections(kind="inet")
    except psutil.Error:
        return []
    return sorted(f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == psutil.CONN_LISTEN)


# ---------------------------------------------------------------- the limit


class _Watch:
    """The running phase: which test, since when, and its limit."""

    def __init__(self, item: pytest.Item, phase: str, seconds: float):
        self.item, self.phase, self.seconds = item, phase, seconds
        self.since = time.time()


def _stuck(watch: _Watch) -> str:
    """End what the test started, and say so."""
    procs = started(watch.since)
    text = tree_text(procs)
    end(procs)
    return (f"{watch.item.nodeid}: {watch.phase} ran past its limit of {watch.seconds:.0f} s "
            f"(@pytest.mark.timeout in tests/limits.py); the processes it had started, now ended:\n{text}")


@contextmanager
def _limited(item: pytest.Item, phase: str, seconds: float):
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; pytest runs tests there
        return
    watch = _Watch(item, phase, seconds)

    def on_alarm(signum, frame):
        pytest.fail(_stuck(watch), pytrace=True)  # the traceback shows where it was stuck

    def last_resort():
        # The alarm's exception could not get through (a C call that never returns to Python):
        # say which test, show every thread's stack, end its processes and this worker.
        print(f"\n{_stuck(watch)}\nit did not stop {GRACE:.0f} s after that; ending this pytest process",
              file=sys.stderr, flush=True)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(1)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    backstop = threading.Timer(seconds + GRACE, last_resort)
    backstop.daemon = True
    backstop.start()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        backstop.cancel()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with _limited(item, "setup", limit_of(item) + SETUP):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with _limited(item, "the test", limit_of(item)):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem):
    with _limited(item, "teardown", TEARDOWN):
        yield


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout(seconds): this test's limit, past which it fails "
                                       "and what it started is ended (tests/limits.py)")
    config.stash[_LEFT_KEY] = []


# ---------------------------------------------------------------- the end of the run

_LEFT_KEY = pytest.StashKey[list]()


def sweep() -> list[str]:
    """End whatever this process started that is still running; what was found, in words."""
    procs = started()
    found = [f"process {line.strip()}" for line in tree_text(procs).splitlines()] if procs else []
    end(procs)
    return found + [f"port {port} still bound by pytest itself" for port in listening_ports()]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        left = config.stash[_LEFT_KEY]  # the xdist controller: what its workers reported
    else:
        left = sweep()
        if hasattr(config, "workeroutput"):
            config.workeroutput[LEFT] = left
            return
    if left:
        print("\nleft behind by the tests, now ended (tests/limits.py):\n  " + "\n  ".join(left),
              file=sys.stderr, flush=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # xdist's hook, in the controller
    output = getattr(node, "workeroutput", {}) or {}
    node.config.stash[_LEFT_KEY].extend(output.get(LEFT, []))
