"""One pipeline run at a time in a repo, and stages that stop when their run is gone.

DVC locks only the stage it is running (its outputs, in .dvc/tmp/rwlock) and releases its
repo lock while a stage's command runs. So a second `dvc repro` started beside a first one
could run the other training stage at the same time, write params.yaml's results into
dvc.lock out of order, or hold a stage the first one needs next. This module keeps a
run-level record, paths.run_lock, naming the process that owns the run: a flow run, or the
`dvc` process whose stages are running. A stage or flow that finds a live owner that is not
one of its own ancestors stops at once with RepoBusy, before it has written anything.

The record is never trusted blindly: an owner that has exited (or whose PID now belongs
to another process) is stale, so a killed run leaves nothing to clean up by hand.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path

WATCH_SECONDS = 1.0  # how often a stage checks that its run still exists


class RepoBusy(StageError):
    """Another run holds the repo."""


def _record(proc: psutil.Process) -> dict:
    return {"pid": proc.pid, "created": proc.create_time(), "command": " ".join(_command(proc))}


def _command(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _is_dvc(proc: psutil.Process) -> bool:
    """Whether a process is the dvc command (`dvc ...`, `python -m dvc ...`, `python .../dvc ...`)."""
    args = [Path(a).name for a in _command(proc)[:3]]
    return bool(args) and (args[0] == "dvc" or args[1:2] == ["dvc"] or args[1:3] == ["-m", "dvc"])


def owner_of(record: dict | None) -> psutil.Process | None:
    """The live process a record names, or None if it has exited or its PID was reused."""
    if not record:
        return None
    try:
        proc = psutil.Process(record["pid"])
        if abs(proc.create_time() - record["created"]) < 0.01:
            return proc
    except (psutil.Error, KeyError, TypeError):
        pass
    return None


def read(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def busy_message(owner: psutil.Process, record: dict) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(record["created"]))
    return (f"another run holds this repo: PID {owner.pid} ({record['command'] or 'unknown'}, "
            f"started {since}); wait for it to finish, or stop it (Ctrl-C where it runs, or "
            f"kill {owner.pid}) and run again")


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Serialize the read-check-write of the record between processes."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def claim(path: Path, owner: psutil.Process) -> psutil.Process:
    """Make `owner` the run holding the repo, unless a live run that is neither this process
    nor one of its ancestors holds it (RepoBusy). Returns the run's owner: `owner`, or the
    ancestor already holding it (a flow run whose `dvc repro` started this stage)."""
    path = Path(path)
    mine = {p.pid for p in psutil.Process().parents()} | {os.getpid()}
    with _exclusive(path):
        record = read(path)
        holder = owner_of(record)
        if holder is not None and holder.pid in mine | {owner.pid}:
            return holder
        if holder is not None:
            raise RepoBusy(busy_message(holder, record))
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(_record(owner)) + "\n")
        return owner


def release(path: Path, owner: psutil.Process) -> None:
    """Drop the record if `owner` holds it."""
    path = Path(path)
    with _exclusive(path):
        holder = owner_of(read(path))
        if holder is not None and holder.pid == owner.pid:
            path.unlink(missing_ok=True)


@contextlib.contextmanager
def holding(path: Path) -> Iterator[None]:
    """This process holds the repo for the block (a flow run)."""
    me = psutil.Process()
    claim(path, me)
    try:
        yield
    finally:
        release(path, me)


def stage_owner() -> psutil.Process:
    """Whom a stage's run belongs to: the outermost `dvc` process above it, else itself
    (a stage run by hand)."""
    dvcs = [p for p in psutil.Process().parents() if _is_dvc(p)]
    return dvcs[-1] if dvcs else psutil.Process()


@contextlib.contextmanager
def stage_run(path: Path) -> Iterator[None]:
    """A stage's hold on the repo: refuse to start beside another run, and stop (SIGTERM to
    this process, which the stage handles as a clean stop) when the run's owner or this
    stage's parent exits. A `dvc` killed with SIGKILL, or a flow run killed after its
    grace period, thus leaves no training behind."""
    me = psutil.Process()
    owner = claim(path, stage_owner())
    parent = os.getppid()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(WATCH_SECONDS):
            if os.getppid() != parent or not owner.is_running():
                os.kill(os.getpid(), signal.SIGTERM)
                return

    watcher = threading.Thread(target=watch, name="hotdog-run-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        if owner.pid == me.pid:
            release(path, me)
