"""Does `hotdog experiments run` always finish? The whole experiments.yaml, N times in a row,
on a tiny offline copy of the project; prints each run's wall time and which experiments failed.

Run from the repo root: python -m benchmarks.experiments_loop /tmp/loop [--runs 3] [--from DIR]
DIR (default: this repo) is copied as a clone would have it (tracked files, and new ones git
does not ignore), so uncommitted work is measured too; /tmp/loop must not exist yet. Run i
sets seed=i, so every run trains every experiment again; with --reuse each run is the same,
and DVC's run cache restores what the first one trained.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.tiny import ENV, synthetic_inputs, tiny_project

REPO = Path(__file__).resolve().parents[1]
SIZES = ["-S", "train.epochs=1", "-S", "train.image_size=32"]  # what `hotdog experiments run` adds


def run(cwd: Path, *args: str, log: Path | None = None) -> subprocess.CompletedProcess:
    """A command (no shell); its output to `log` if given, else kept. Stops the loop if it fails."""
    with open(log or "/dev/null", "w") as out:
        done = subprocess.run(args, cwd=cwd, text=True, stdout=out if log else subprocess.PIPE,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"error: experiments_loop: {' '.join(args)} failed in {cwd}"
                 + (f"; see {log}" if log else f":\n{done.stdout}"))
    return done


def set_up(work: Path, source: Path) -> Path:
    """work/project: the tiny project, run once with `dvc repro` and committed (experiments
    run from HEAD)."""
    project = tiny_project(source, work / "project", synthetic_inputs(source, work / "files"))
    run(project, sys.executable, "-m", "dvc", "repro", log=work / "repro.log")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "pipeline run")
    return project


def expected(project: Path) -> set[str]:
    """The names of every experiment in the project's experiments.yaml, grids expanded."""
    from hotdog.experiments.spec import read_set, runs_of

    return {run for name, o in read_set(project / "experiments.yaml").items() for run in runs_of(name, o)}


def outcome(project: Path, names: set[str]) -> dict[str, str]:
    """{experiment: state} for `names`, as `dvc exp show` lists them; 'missing' if it does not."""
    from hotdog.experiments.compare import experiments_of

    show = json.loads(run(project, sys.executable, "-m", "dvc", "exp", "show", "--json").stdout)
    found = {e.name: e.state for e in experiments_of(show)[1]}
    return {name: found.get(name, "missing") for name in sorted(names)}


def one_run(project: Path, log: Path, names: set[str], sets: list[str]) -> tuple[float, int, dict[str, str]]:
    """`hotdog experiments run` with the sizes and `sets`: (wall seconds, exit status, states)."""
    start = time.monotonic()
    with open(log, "w") as out:
        # python -m from the project's root: its own hotdog package, not the one installed.
        status = subprocess.run([sys.executable, "-m", "hotdog.cli", "experiments", "run", *SIZES, *sets],
                                cwd=project, stdout=out, stderr=subprocess.STDOUT).returncode
    return time.monotonic() - start, status, outcome(project, names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.experiments_loop", description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="a folder to create: the project, its data and the logs")
    parser.add_argument("--runs", type=int, default=3, help="times to run the whole set (default 3)")
    parser.add_argument("--reuse", action="store_true", help="the same set each run (default: run i sets seed=i)")
    parser.add_argument("--from", dest="source", type=Path, default=REPO, help="the project to copy (default: this repo)")
    args = parser.parse_args(argv)
    os.environ.update(ENV)  # this interpreter's bin first on PATH, and a git identity
    if args.work.exists():
        sys.exit(f"error: experiments_loop: {args.work} exists; name a new folder")
    start = time.monotonic()
    project = set_up(args.work.resolve(), args.source.resolve())
    names = expected(project)
    print(f"{datetime.date.today()}: set up {project} in {time.monotonic() - start:.0f} s; "
          f"{len(names)} experiments per run", flush=True)
    failures = 0
    for i in range(1, args.runs + 1):
        log = args.work / f"run-{i}.log"
        sets = [] if args.reuse else ["-S", f"seed={i}"]
        wall, status, states = one_run(project, log, names, sets)
        bad = {name: state for name, state in states.items() if state != "success"}
        failures += bool(bad or status)
        label = f"run {i}/{args.runs}" + ("" if args.reuse else f" (seed={i})")
        print(f"{label}: {wall:.0f} s wall, exit status {status}, "
              f"{len(states) - len(bad)}/{len(states)} succeeded"
              + (f"; not: {', '.join(f'{n} ({s})' for n, s in bad.items())}; see {log}" if bad else ""), flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
