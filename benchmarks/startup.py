"""How fast the stages start (issue #18): for each `python -m stages.<name>`, the seconds from
spawning it to its Started event (its first line of work) and to its exit, on a tiny
synthetic project (32 px, 1 epoch); and the wall time of a whole `dvc repro` of that project.

Run from the repo root: python -m benchmarks.startup [--repeats 3] [--from DIR] [--record]
DIR (default: this repo) is copied as a clone has it (tracked files, and new ones git does
not ignore), so uncommitted work is measured too, and another checkout can be compared.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench import RESULTS, machine
from benchmarks.tiny import ENV, synthetic_inputs, tiny_project
from hotdog.core import events
from hotdog.core.names import STAGES

REPO = Path(__file__).resolve().parents[1]


def run(cwd: Path, *args: str) -> str:
    """A command's output; stops the benchmark with that output if it fails."""
    done = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: startup: {' '.join(args)} failed in {cwd}:\n{done.stdout}{done.stderr}")
    return done.stdout


def time_stage(project: Path, stage: str) -> tuple[float, float]:
    """(seconds to the Started event, seconds to exit) of `python -m stages.<stage>`."""
    with tempfile.TemporaryFile("w+") as errors:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=project,
                                env={**ENV, events.ENV: "1"}, stdout=subprocess.PIPE, stderr=errors, text=True)
        started = None
        for line in proc.stdout:
            if started is None and isinstance(events.parse(line.rstrip("\n")), events.Started):
                started = time.perf_counter() - start
        proc.wait()
        end = time.perf_counter() - start
        if proc.returncode != 0 or started is None:
            errors.seek(0)
            sys.exit(f"error: startup: stages.{stage} failed (exit {proc.returncode}):\n{errors.read()[-3000:]}")
    return started, end


def time_command(cwd: Path, *args: str) -> float:
    """Wall seconds of a command, start to exit."""
    start = time.perf_counter()
    run(cwd, *args)
    return time.perf_counter() - start


def commit(source: Path) -> str:
    """source's short commit, with "+ uncommitted" when its tree differs from it."""
    head = run(source, "git", "rev-parse", "--short", "HEAD").strip()
    dirty = run(source, "git", "status", "--porcelain", "--untracked-files=no").strip()
    return f"{head} + uncommitted" if dirty else head


def spread(values: list[float]) -> str:
    """The best of the runs, and all of them: the machine's load varies between runs."""
    return f"**{min(values):.2f}** ({', '.join(f'{v:.2f}' for v in values)})"


def measure(source: Path, work: Path, repeats: int) -> dict[str, list[float]]:
    """Every figure, `repeats` times each, in seconds."""
    overrides = synthetic_inputs(source, work / "files")
    figures: dict[str, list[float]] = {}
    for i in range(repeats):
        python = [sys.executable, "-c", "pass"]
        figures.setdefault("python", []).append(time_command(work, *python))
        figures.setdefault("import torch", []).append(time_command(work, *python[:2], "import torch"))
        # Stage by stage, in the pipeline's order: each makes the next one's inputs.
        project = tiny_project(source, work / f"stages-{i}", overrides)
        for stage in STAGES:
            started, end = time_stage(project, stage)
            figures.setdefault(f"{stage} start", []).append(started)
            figures.setdefault(f"{stage} end", []).append(end)
        project = tiny_project(source, work / f"repro-{i}", overrides)
        figures.setdefault("dvc repro", []).append(time_command(project, "dvc", "repro"))
    return figures


def table(figures: dict[str, list[float]]) -> list[str]:
    """The figures as markdown lines."""
    rows = ["| | to its first line of work (Started) | to exit |", "|---|---|---|"]
    rows += [f"| `python -m stages.{s}` | {spread(figures[f'{s} start'])} | {spread(figures[f'{s} end'])} |"
             for s in STAGES]
    rows += [f"| `dvc repro`, all {len(STAGES)} stages from nothing | | {spread(figures['dvc repro'])} |",
             f"| for scale: `python -c pass` | | {spread(figures['python'])} |",
             f"| for scale: `python -c 'import torch'` | | {spread(figures['import torch'])} |"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of everything; the best is in bold")
    parser.add_argument("--from", dest="source", type=Path, default=REPO, help="the checkout to measure")
    parser.add_argument("--record", action="store_true", help=f"append the table to {RESULTS}")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    source = args.source.resolve()
    with tempfile.TemporaryDirectory(prefix="hotdog-startup-") as tmp:
        figures = measure(source, Path(tmp), args.repeats)
    lines = [f"Machine: {machine()}. Code: commit {commit(source)}"
             f"{'' if source == REPO else f' (from {source})'}. Tiny synthetic project (8 train and "
             f"6 test images per class, 32 px, 1 epoch, batch 8, fp32), local files for data.url and "
             f"weights.url. Seconds, best of {args.repeats} in bold, then each run:", "", *table(figures)]
    print("\n".join(lines))
    if args.record:
        command = "python -m benchmarks.startup " + " ".join(argv if argv is not None else sys.argv[1:])
        with args.results.open("a") as f:
            f.write(f"\n### {datetime.date.today().isoformat()}: {command.strip()}\n\n" + "\n".join(lines) + "\n")
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
