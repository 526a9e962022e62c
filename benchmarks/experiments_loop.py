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
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[1]
# A quick pass on a CPU, as tests/conftest.py's TINY and pipeline_run have it; the data and
# weights keys are added once the synthetic files exist.
TINY = {"train.epochs": 1, "train.batch_size": 8, "train.image_size": 32, "train.device": "cpu",
        "train.precision": "fp32", "runtime.num_workers": 0, "manifest.max_reject_fraction": 0.2}
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


def copy_tree(source: Path, dest: Path) -> None:
    """source's files as a clone has them, plus its new files git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                            cwd=source, capture_output=True, text=True, check=True)
    for rel in listed.stdout.splitlines():
        if (source / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest / rel)


def write_params(project: Path, overrides: dict) -> None:
    """The project's params.yaml with dotted keys set, its comments kept."""
    yaml = YAML()
    params = yaml.load(project / "params.yaml")
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[last] = value
    yaml.dump(params, project / "params.yaml")


def synthetic_files(project: Path, dest: Path) -> dict:
    """The synthetic data set and stand-in weights (tests/synthetic.py); the params naming them."""
    sys.path.insert(0, str(project / "tests"))
    from synthetic import dataset_files, write_weights, write_zip

    sha1 = write_zip(dest / "hotdog.zip", dataset_files({"train": 8, "test": 6}, corrupt=1))
    sha256 = write_weights(dest / "resnet18-stand-in.pth")
    return {"data.url": str(dest / "hotdog.zip"), "data.sha1": sha1,
            "weights.url": str(dest / "resnet18-stand-in.pth"), "weights.sha256": sha256[:8]}


def set_up(work: Path, source: Path) -> Path:
    """work/project: the tiny project, run once with `dvc repro` and committed (experiments
    run from HEAD)."""
    project = work / "project"
    copy_tree(source, project)
    write_params(project, {**TINY, **synthetic_files(project, work / "files")})
    run(project, "git", "init", "-q")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "tiny project")
    run(project, sys.executable, "-m", "dvc", "repro", log=work / "repro.log")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "pipeline run")
    return project


def expected(project: Path) -> set[str]:
    """The names of every experiment in the project's experiments.yaml, grids expanded."""
    from hotdog.experiments import read_set, runs_of

    return {run for name, o in read_set(project / "experiments.yaml").items() for run in runs_of(name, o)}


def outcome(project: Path, names: set[str]) -> dict[str, str]:
    """{experiment: state} for `names`, as `dvc exp show` lists them; 'missing' if it does not."""
    from hotdog.experiments import experiments_of

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
    # Stage commands say `python -m stages.<name>`: this interpreter's; and a machine without
    # a git identity can still commit.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    for key, value in (("GIT_AUTHOR_NAME", "loop"), ("GIT_AUTHOR_EMAIL", "loop@example.com"),
                       ("GIT_COMMITTER_NAME", "loop"), ("GIT_COMMITTER_EMAIL", "loop@example.com")):
        os.environ.setdefault(key, value)
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
