"""Running `dvc` for the flows and the `hotdog` command: the venv's own dvc, no shell, with
the environment the stage commands need, and its output streamed line by line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from hotdog.core import events


def dvc_env() -> dict[str, str]:
    """The environment for `dvc`: events on, unbuffered, and this interpreter's bin first on
    PATH, since stage commands say `python -m stages.<name>`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{events.ENV: "1"})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


# How long `dvc` and its stage get to stop after SIGTERM before SIGKILL. A stage stops
# within a second or two (hotdog.runner.stage.run_main); DataLoader workers need a moment more.
STOP_SECONDS = 15.0


def stream_dvc(args: list[str], cwd: Path, on_line: Callable[[str], None],
               stop_signal: int = signal.SIGTERM, stop: threading.Event | None = None) -> int:
    """Run `dvc <args>` (no shell), handing each output line to on_line as it arrives;
    returns the exit status.

    `dvc` starts in a process group of its own, with its stage and the stage's workers in it.
    If this process is interrupted (Ctrl-C, or Prefect cancelling the flow run), the whole
    group gets `stop_signal`, then SIGKILL if it outlives STOP_SECONDS: nothing keeps training
    after the flow run has ended. (`dvc exp run --temp` removes its copy of the repo on
    SIGINT only: its callers pass that.) Setting `stop`, from another thread, does the same.
    """
    if stop_signal == signal.SIGINT and signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background by a script: dvc inherits SIGINT ignored, and would
        # only stop at the SIGKILL.
        stop_signal = signal.SIGTERM
    command = [sys.executable, "-m", "dvc", *args]
    with subprocess.Popen(command, cwd=cwd, env=dvc_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True) as proc:
        if stop is not None:
            threading.Thread(target=_stop_when_set, args=(proc, stop, stop_signal), daemon=True).start()
        try:
            for raw in proc.stdout:
                for line in raw.rstrip("\n").split("\r"):  # a bar's redraws become lines
                    if line.strip():
                        on_line(line)
        except BaseException:
            stop_group(proc, stop_signal)
            raise
    return proc.returncode


def _stop_when_set(proc: subprocess.Popen, stop: threading.Event, first: int) -> None:
    """Stop dvc's group once `stop` is set, unless dvc has ended by then."""
    while proc.poll() is None:
        if stop.wait(0.5):
            stop_group(proc, first)
            return


def stop_group(proc: subprocess.Popen, first: int = signal.SIGTERM) -> None:
    """`first` (SIGTERM) to the process group led by `proc`, then SIGKILL to what is left of it."""
    try:
        os.killpg(proc.pid, first)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)  # anyone left in the group?
        except ProcessLookupError:
            break
        proc.poll()  # reap dvc itself, so it does not linger as a zombie
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
