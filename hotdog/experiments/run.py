"""Running a set's experiments: one `dvc exp run --temp` each, in turn, in the foreground,
every line passed on; a failed experiment is one line, and the rest still run."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hotdog.core import events
from hotdog.core.overrides import set_param
from hotdog.core.params import PARAMS_FILE, read_params
from hotdog.experiments.compare import Failure, exp_show, experiments_of
from hotdog.experiments.spec import ExperimentsError, check_set, not_applicable, runs_of
from hotdog.runner.dvc_run import stream_dvc

# An experiment's stages can be quiet for long (a tenth of a slow epoch or evaluation on a
# CPU), so nothing is cut off; past this many seconds without a line, a note says dvc is
# still at it.
QUIET_SECONDS = 600.0


def run_args(name: str, values: dict[str, Any], sizes: dict[str, Any]) -> list[str]:
    """`dvc exp run --temp` for one experiment (one run of an entry, as runs_of gives it): a
    temporary copy of the repo, in the foreground, recorded as the experiment `name`. The
    sizes come last, so a quick pass on a CPU holds for every experiment. Not -f: besides
    replacing an experiment of the same name, it forces every stage to run, download included."""
    args = ["exp", "run", "--temp", "-n", name]
    for key, value in {**values, **sizes}.items():
        args += ["-S", set_param(key, value)]
    return args


def data_classes(cwd: Path) -> tuple[str, ...] | None:
    """The classes of the workspace's data, from its last manifest; None before there is one."""
    summary = read_params(cwd / PARAMS_FILE).paths.under(cwd).manifest_summary
    try:
        return tuple(json.loads(summary.read_text())["classes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def applicable(runs: dict[str, dict[str, Any]], classes: Sequence[str] | None,
               on_line: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """The runs that apply to data of these classes; each other one is said in one line."""
    kept = {}
    for name, values in runs.items():
        reason = not_applicable(values, classes)
        if reason is None:
            kept[name] = values
        else:
            on_line(f"experiments: {name!r} skipped: {reason}")
    return kept


def run_set(cwd: Path, experiments: dict[str, dict[str, Any]], sizes: dict[str, Any],
            on_line: Callable[[str], None]) -> tuple[set[str], dict[str, Failure]]:
    """Check the set, then run its experiments one after another, each a `dvc exp run --temp`
    in the foreground: (their names, those that failed and why). No queue: DVC's queue
    worker could vanish mid-set and leave `--run-all` waiting on it in silence. Earlier
    experiments of the same names (of this commit) are replaced. A set that fails its check
    is an ExperimentsError before anything changes; a failed experiment is said in one line,
    and the rest still run. One that does not apply to the data (spec.not_applicable) is
    said in one line and skipped. Each earlier experiment is replaced only as its new run
    starts, so a set stopped half way keeps the results of the entries it had not reached."""
    check_set(experiments, sizes, cwd / PARAMS_FILE)
    runs = {run: values for name, overrides in experiments.items() for run, values in runs_of(name, overrides).items()}
    runs = applicable(runs, data_classes(cwd), on_line)
    failed = {}
    for name, values in runs.items():
        replace_earlier(cwd, name, on_line)
        reason = run_one(cwd, name, values, sizes, on_line)
        if reason is not None:
            on_line(f"experiments: {name!r} failed: {reason}")
            failed[name] = Failure({**values, **sizes}, reason)
    return set(runs), failed


def replace_earlier(cwd: Path, name: str, on_line: Callable[[str], None]) -> None:
    """Remove HEAD's earlier finished experiment `name`: DVC refuses a name it has, and `-f`
    would also force every stage to run.

    Only a finished one (DVC's "success") has a record to remove. A run stopped by Ctrl-C, a
    kill or a cancelled flow run stays listed as "running" with no record behind it: `dvc exp
    remove` refuses its name, and DVC runs the name again regardless."""
    if not any(e.name == name and e.state == "success" for e in experiments_of(exp_show(cwd))[1]):
        return
    if stream_dvc(["exp", "remove", name], cwd, on_line) != 0:
        raise ExperimentsError(f"dvc could not remove the earlier experiment {name!r} (its message is above); remove "
                               "it with `dvc exp remove`, or rename the entry")


def run_one(cwd: Path, name: str, values: dict[str, Any], sizes: dict[str, Any],
            on_line: Callable[[str], None]) -> str | None:
    """One experiment, every line to on_line: None if DVC recorded it, else why not (the
    stage's own one-line error, else dvc's)."""
    lines: list[str] = []  # a few hundred at most: dvc's, and a line per tenth of an epoch

    def line(text: str) -> None:
        lines.append(text)
        on_line(text)

    with Quiet(f"experiment {name!r}", line) as heard:
        # Stopped with SIGINT, on which DVC removes its temporary copy of the repo (on SIGTERM it
        # left .dvc/tmp/exps/standalone/tmp*, a whole checkout, behind at every stop).
        status = stream_dvc(run_args(name, values, sizes), cwd, heard, signal.SIGINT)
    return None if status == 0 else failure_reason(lines, status)


def failure_reason(lines: list[str], status: int) -> str:
    """Why an experiment failed, from its output: the stage's own one-line error (its Failed
    event), else dvc's first ERROR line, else dvc's exit status."""
    parsed = [events.parse(line) for line in lines]
    stage = [event.message for event in parsed if isinstance(event, events.Failed)]
    dvc = [line.removeprefix("ERROR: ") for line, event in zip(lines, parsed)
           if event is None and line.startswith("ERROR: ")]
    return (stage + dvc + [f"dvc exp run exited with status {status}"])[0]


class Quiet:
    """on_line for one long dvc command that also says, each `seconds` it is silent, that it
    is still running: a stuck command is then not a silent one, and a long training run is
    never cut off. The note comes from a thread of its own, through the same on_line."""

    def __init__(self, what: str, on_line: Callable[[str], None], seconds: float = QUIET_SECONDS):
        self.what, self.on_line, self.seconds = what, on_line, seconds
        self.heard = time.monotonic()
        self.done = threading.Event()
        self.watch = threading.Thread(target=self._watch, name="experiments-quiet", daemon=True)

    def __enter__(self) -> Quiet:
        self.watch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.watch.join()

    def __call__(self, line: str) -> None:
        self.heard = time.monotonic()
        self.on_line(line)

    def _watch(self) -> None:
        noted = self.heard
        while not self.done.wait(self.seconds / 10):
            now = time.monotonic()
            if now - max(self.heard, noted) >= self.seconds:
                noted = now
                self.on_line(f"experiments: {self.what}: no output for {_span(now - self.heard)}; dvc is still "
                             "running it (a tenth of a long epoch or evaluation can be quiet). If it is stuck, "
                             "stop it: Ctrl-C, or cancel the flow run")


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def failed_message(failed: dict[str, Failure]) -> str:
    """The end of a run with failures: which ones, and where to read why."""
    return (f"some experiments failed: {', '.join(sorted(failed))}. Each one's error is above and in its row "
            "of the comparison; fix the cause and run those again")


