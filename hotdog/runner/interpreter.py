"""A stage runs in the project's Python, whichever `python` DVC's shell finds first.

dvc.yaml's commands say `python -m stages.<name>`, and DVC runs them with the PATH it was
given. `.venv/bin/dvc repro` without the venv activated therefore starts each stage with
the system's python, which lacks torch and the rest. Before anything else a stage checks
that it can import what the project needs. If it cannot, it re-runs itself with the Python
that runs `dvc` (it has to be the project's: it runs dvc from the project's venv), or with
the repo's .venv/bin/python, and says so in one line. If neither is there, it stops with one
line saying what to do.

Standard library only: this runs before any of the project's dependencies is imported.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

NEEDED = ("torch", "torchvision", "numpy", "pyarrow", "PIL", "pydantic", "ruamel.yaml", "tqdm", "psutil")
REEXEC = "HOTDOG_REEXEC"  # set in the re-run stage, so it never re-runs itself twice


def missing(modules: tuple[str, ...] = NEEDED) -> list[str]:
    """The modules of `modules` this interpreter cannot import."""
    lost = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # a dotted name whose parent package is missing
            found = False
        if not found:
            lost.append(name)
    return lost


def _ancestors() -> list[list[str]]:
    """The command lines of this process's ancestors, nearest first (Linux's /proc)."""
    lines, pid = [], os.getppid()
    while pid > 1:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        lines.append([a.decode(errors="replace") for a in argv if a])
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent
    return lines


def dvc_python(ancestors: list[list[str]]) -> str | None:
    """The interpreter of the nearest `dvc` above: `python .../bin/dvc ...` (how a console
    script's shebang runs it) or `python -m dvc ...`."""
    for argv in ancestors:
        if len(argv) >= 2 and Path(argv[0]).name.startswith("python"):
            if Path(argv[1]).name == "dvc" or argv[1:3] == ["-m", "dvc"]:
                return argv[0]
    return None


def candidates(root: Path) -> list[str]:
    """Where the project's Python may be, best first."""
    found = [dvc_python(_ancestors()), str(root / ".venv" / "bin" / "python")]
    here = os.path.abspath(sys.executable)
    # Compared unresolved: a venv's python is a link to the system's, and is not the same.
    return [p for p in found if p and os.path.abspath(p) != here and os.access(p, os.X_OK)]


def ensure_project_python() -> None:
    """Return if this Python has what the stages need; else re-run the stage with the
    project's Python, or exit with one line."""
    lost = missing()
    if not lost:
        return
    argv = getattr(sys, "orig_argv", [])  # ['python', '-m', 'stages.x', ...]
    # From `-m` on: this interpreter's own flags (-S, -I) may be what hides the packages.
    command = argv[argv.index("-m"):] if "-m" in argv[:-1] else []
    stage = command[1].rpartition(".")[2] if command else "stages"
    what = f"{sys.executable} cannot import {', '.join(lost)}"
    root = Path(os.environ.get("DVC_ROOT", os.getcwd()))
    if command and os.environ.get(REEXEC) != "1":
        for python in candidates(root):
            print(f"note: {stage}: {what}; running the stage with {python}, the project's Python",
                  file=sys.stderr, flush=True)
            os.execve(python, [python, *command], {**os.environ, REEXEC: "1"})
    print(f"error: {stage}: {what}: this is not the project's Python environment; activate it "
          f"(. .venv/bin/activate) or run `make run`, then re-run", file=sys.stderr, flush=True)
    sys.exit(1)
