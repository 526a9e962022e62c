"""Running `dvc` for the flows and the `hotdog` command: the venv's own dvc, no shell, with
the environment the stage commands need, and its output streamed line by line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from hotdog import events


def dvc_env() -> dict[str, str]:
    """The environment for `dvc`: events on, unbuffered, and this interpreter's bin first on
    PATH, since stage commands say `python -m stages.<name>`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{events.ENV: "1"})
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def stream_dvc(args: list[str], cwd: Path, on_line: Callable[[str], None]) -> int:
    """Run `dvc <args>` (no shell), handing each output line to on_line as it arrives;
    returns the exit status."""
    command = [sys.executable, "-m", "dvc", *args]
    with subprocess.Popen(command, cwd=cwd, env=dvc_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for raw in proc.stdout:
            for line in raw.rstrip("\n").split("\r"):  # a bar's redraws become lines
                if line.strip():
                    on_line(line)
    return proc.returncode
