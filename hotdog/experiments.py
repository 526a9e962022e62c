"""The chapter's exercises as DVC experiments: the named set (experiments.yaml), the dvc
commands that run it (one `dvc exp run --temp` each, in turn), and the comparison of what
they measured.

DVC keeps the record: each experiment is a commit under refs/exps, listed by `dvc exp
show` and brought back by `dvc exp apply <name>`. The comparison reads `dvc exp show
--json`, and each experiment's per-epoch file from its commit.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from matplotlib.figure import Figure
from ruamel.yaml import YAML, YAMLError

from hotdog import events
from hotdog.dvc_run import stream_dvc
from hotdog.errors import StageError
from hotdog.files import atomic_path
from hotdog.params import PARAMS_FILE, RUNS, ParamsError, Paths, check_overrides, read_params
from hotdog.results import RUN_TITLES

SET_FILE = Path("experiments.yaml")
# DVC names an experiment's git ref after it: letters, digits, '-' and '_', a letter first.
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
# An experiment's stages can be quiet for long (an evaluation, a slow epoch), so nothing is
# cut off; past this many seconds without a line, a note says dvc is still at it.
QUIET_SECONDS = 600.0


class ExperimentsError(StageError):
    """The experiment set, an override, or a dvc command is wrong; the message says which."""


def read_set(path: Path = SET_FILE) -> dict[str, dict[str, Any]]:
    """{experiment name: {dotted params key: value, or a list for a grid}}, shape-checked."""
    try:
        raw = YAML(typ="safe", pure=True).load(Path(path).read_text())
    except FileNotFoundError:
        raise ExperimentsError(f"{path} not found; run from the repo root") from None
    except YAMLError as err:
        raise ExperimentsError(f"{path} is not valid YAML ({err}); fix the syntax") from None
    if not isinstance(raw, dict) or not raw:
        raise ExperimentsError(f"{path}: expected a mapping of experiment names to the params they set")
    for name, overrides in raw.items():
        check_entry(str(name), overrides, path)
    return {str(name): dict(overrides) for name, overrides in raw.items()}


def check_entry(name: str, overrides: Any, where: Path | str) -> None:
    """One entry's shape: a DVC-safe name, and dotted keys to scalars or one non-empty list."""
    if not NAME.match(name):
        raise ExperimentsError(f"{where}: experiment name {name!r} must start with a letter and hold only "
                               "letters, digits, '-' and '_' (DVC makes a git ref of it); rename it")
    if not isinstance(overrides, dict) or not overrides:
        raise ExperimentsError(f"{where}: experiment {name!r} must map params.yaml keys to values")
    grids = [key for key, value in overrides.items() if isinstance(value, list)]
    if len(grids) > 1 or any(not overrides[key] for key in grids):
        raise ExperimentsError(f"{where}: experiment {name!r}: at most one key may hold a list (a grid), "
                               "and it must not be empty; split it into several experiments")
    values = [v for value in overrides.values() for v in (value if isinstance(value, list) else [value])]
    if any(isinstance(v, (list, dict)) or (isinstance(v, str) and "," in v) for v in values):
        raise ExperimentsError(f"{where}: experiment {name!r}: values must be plain numbers, booleans or "
                               "strings without commas (DVC reads a comma as a grid)")


def grid_key(overrides: dict[str, Any]) -> str | None:
    """The key whose list makes the entry a grid; a one-value list is a plain value, as DVC
    sees it (`-S key=x` is no sweep)."""
    return next((k for k, v in overrides.items() if isinstance(v, list) and len(v) > 1), None)


def runs_of(name: str, overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The experiments an entry runs, named as DVC names a grid's: name-1, name-2, ..."""
    plain = {k: v[0] if isinstance(v, list) else v for k, v in overrides.items()}
    grid = grid_key(overrides)
    if grid is None:
        return {name: plain}
    return {f"{name}-{i}": {**plain, grid: value} for i, value in enumerate(overrides[grid], 1)}


def check_set(experiments: dict[str, dict[str, Any]], sizes: dict[str, Any], params: Path = PARAMS_FILE) -> None:
    """Every run of the set, with `sizes` on top, makes valid params; else one error naming
    the experiment and the key. Nothing runs until this passes."""
    seen: set[str] = set()
    for name, overrides in experiments.items():
        check_entry(name, overrides, "experiments")
        grid = grid_key(overrides)
        if grid in sizes:
            raise ExperimentsError(f"experiment {name!r} is a grid over {grid}; do not set {grid} for all")
        for run, values in runs_of(name, overrides).items():
            if run in seen:
                raise ExperimentsError(f"two experiments would both be named {run!r}; rename one entry")
            seen.add(run)
            try:
                check_overrides({**values, **sizes}, params)
            except ParamsError as err:
                raise ExperimentsError(f"experiment {run!r}: {err}") from None


def dvc_value(value: Any) -> str:
    """A value as `dvc exp run -S` reads it (YAML), a list as DVC's grid syntax a,b,c."""
    if isinstance(value, list):
        return ",".join(dvc_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def run_args(name: str, values: dict[str, Any], sizes: dict[str, Any]) -> list[str]:
    """`dvc exp run --temp` for one experiment (one run of an entry, as runs_of gives it): a
    temporary copy of the repo, in the foreground, recorded as the experiment `name`. The
    sizes come last, so a quick pass on a CPU holds for every experiment. Not -f: besides
    replacing an experiment of the same name, it forces every stage to run, download included."""
    args = ["exp", "run", "--temp", "-n", name]
    for key, value in {**values, **sizes}.items():
        args += ["-S", f"{key}={dvc_value(value)}"]
    return args


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`-S key=value` pairs from a command line, values read as YAML, as DVC reads them."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ExperimentsError(f"-S {pair!r}: expected key=value, e.g. -S train.epochs=1")
        out[key] = YAML(typ="safe", pure=True).load(value)
    return out


# ---------------------------------------------------------------- comparison


class Experiment(NamedTuple):
    name: str
    rev: str
    params: dict[str, Any]  # flat: {"finetune.lr": 5e-05, ...}
    metrics: dict[str, dict]  # {metrics file: its data}
    error: str | None
    state: str = "success"  # as dvc exp show says: queued, running, success or failed

    @property
    def done(self) -> bool:
        """Whether DVC has finished with it, either way."""
        return self.state in ("success", "failed")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested params as dotted keys."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _entry(rev: dict) -> Experiment:
    data = rev.get("data") or {}
    params = flatten(((data.get("params") or {}).get(str(PARAMS_FILE)) or {}).get("data") or {})
    metrics = {path: (m or {}).get("data") or {} for path, m in (data.get("metrics") or {}).items()}
    error = rev.get("error")
    return Experiment(rev.get("name") or rev["rev"][:7], rev["rev"], params, metrics,
                      None if not error else str(error.get("msg", error) if isinstance(error, dict) else error))


def experiments_of(exp_show: list[dict]) -> tuple[Experiment, list[Experiment]]:
    """(the baseline, its experiments) from `dvc exp show --json`: the baseline is the
    commit the experiments were run from (HEAD), not the workspace."""
    commits = [c for c in exp_show if c.get("rev") != "workspace"]
    if not commits:
        raise ExperimentsError("dvc exp show lists no commit; commit the project first (git commit)")
    head = commits[0]
    found = []
    for group in head.get("experiments") or []:
        # An experiment DVC is still running or has yet to run is listed too, with the
        # baseline's files; only its state tells. One without an executor is a finished one.
        state = (group.get("executor") or {}).get("state") or "success"
        for rev in group.get("revs") or []:
            entry = _entry(rev)
            if entry.error or state == "failed":
                entry = entry._replace(error=entry.error or "failed", state="failed")
            found.append(entry._replace(state=entry.state if entry.error else state))
    return _entry(head), found


def changed(params: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The params that differ from the baseline's (paths aside)."""
    return {k: v for k, v in params.items() if baseline.get(k) != v and not k.startswith("paths.")}


class Row(NamedTuple):
    name: str
    params: dict[str, Any]  # what differs from the baseline
    results: dict[str, dict[str, float | None]]  # run -> acc, balanced, auc, loss, wall
    error: str | None


def comparison(baseline: Experiment, experiments: list[Experiment], paths: Paths
               ) -> tuple[dict[str, Any], list[Row]]:
    """(the changes every experiment shares, one row per experiment), sorted by name."""
    diffs = [changed(e.params, baseline.params) for e in experiments]
    shared = dict(set.intersection(*(set(_hashable(d).items()) for d in diffs))) if len(diffs) > 1 else {}
    evaluation, rows = str(paths.evaluation), []
    for e, diff in sorted(zip(experiments, diffs), key=lambda pair: pair[0].name):
        results = {}
        for run in RUNS:
            m = e.metrics.get(evaluation, {}).get(run, {})
            s = e.metrics.get(str(paths.run_summary(run)), {})
            results[run] = {"accuracy": m.get("accuracy"), "balanced_accuracy": m.get("balanced_accuracy"),
                            "roc_auc": m.get("roc_auc"), "loss": m.get("loss"),
                            "examples_per_sec_wall": s.get("examples_per_sec_wall")}
        rows.append(Row(e.name, diff, results, e.error))
    return shared, rows


def _hashable(d: dict) -> dict:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


COLUMNS = (("accuracy", "test acc", ".3f"), ("balanced_accuracy", "balanced acc", ".3f"),
           ("roc_auc", "ROC-AUC", ".3f"), ("loss", "loss", ".3f"), ("examples_per_sec_wall", "ex/s wall", ".1f"))


def table_rows(rows: list[Row], omit: dict[str, Any] | None = None) -> tuple[list[str], list[list[str]]]:
    """The comparison as a header and rows of text (for markdown and a Prefect table); the
    params in `omit` (what every row shares, said once elsewhere) are left out of the rows."""
    header = ["experiment", "params changed"] + [f"{RUN_TITLES[run]} {title}" for run in RUNS
                                                 for _, title, _ in COLUMNS]
    out = []
    for row in rows:
        params = ", ".join(f"{k}={dvc_value(v)}" for k, v in sorted(row.params.items())
                           if k not in (omit or {})) or "(baseline params)"
        cells = [_cell(row.results[run][key], fmt) for run in RUNS for key, _, fmt in COLUMNS]
        if row.error:
            cells = [f"failed: {row.error}"] + [""] * (len(cells) - 1)
        out.append([row.name, params, *cells])
    return header, out


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def render_markdown(shared: dict[str, Any], rows: list[Row], figure: str) -> str:
    """reports/experiments.md: the table, what every experiment shares, and the figure."""
    header, body = table_rows(rows, omit=shared)
    lines = ["# Experiments: the chapter's exercises", "",
             "One row per DVC experiment of the current commit (`dvc exp show` lists the same); "
             "test metrics from each experiment's evaluate stage. Bring one into the workspace "
             "with `dvc exp apply <experiment>`, then commit it.", ""]
    if shared:
        lines += ["Every experiment here also sets: "
                  + ", ".join(f"`{k}={dvc_value(v)}`" for k, v in sorted(shared.items())) + ".", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines += ["", "Test accuracy after each epoch, per experiment:", "", f"![test accuracy per epoch]({figure})", ""]
    return "\n".join(lines)


def plot_curves(curves: dict[str, dict[str, list[dict]]]) -> Figure:
    """Test accuracy per epoch: one panel per model, one line per experiment."""
    fig = Figure(figsize=(12, 4.5), dpi=100, layout="constrained")
    for ax, run in zip(fig.subplots(1, len(RUNS)), RUNS):
        for name, by_run in sorted(curves.items()):
            records = by_run.get(run) or []
            if records:
                ax.plot([r["epoch"] for r in records], [r["test_acc"] for r in records], marker="o", label=name)
        last = max((len(by_run.get(run) or []) for by_run in curves.values()), default=1)
        ax.set_title(f"{RUN_TITLES[run]}: test accuracy")
        ax.set_xlabel("epoch")
        ax.set_xticks(range(1, last + 1))
        ax.set_xlim(0.5, last + 0.5)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return fig


def curves_of(experiments: list[Experiment], paths: Paths,
              read_at: Callable[[str, str], list[dict] | None]) -> dict[str, dict[str, list[dict]]]:
    """Each experiment's per-epoch records per model, read from its commit with read_at(rev, path)."""
    return {e.name: {run: read_at(e.rev, paths.run_epochs(run).as_posix()) or [] for run in RUNS}
            for e in experiments if not e.error}


# ---------------------------------------------------------------- I/O: dvc, git, files


def exp_show(cwd: Path) -> list[dict]:
    """`dvc exp show --json` of the project at cwd."""
    run = subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=cwd,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise ExperimentsError(f"dvc exp show failed in {cwd}: {(run.stderr.strip().splitlines() or [''])[-1]}")
    return json.loads(run.stdout)


def read_at(cwd: Path) -> Callable[[str, str], list[dict] | None]:
    """read(rev, path): a JSON file as git holds it in commit rev, None if it is not there."""
    def read(rev: str, path: str) -> list[dict] | None:
        run = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=cwd, capture_output=True, text=True)
        return json.loads(run.stdout) if run.returncode == 0 else None
    return read


class Failure(NamedTuple):
    """An experiment that DVC did not record: a failed `dvc exp run --temp` leaves no trace
    in `dvc exp show`, so its row in the comparison comes from here."""
    params: dict[str, Any]  # the dotted keys it set, sizes included
    reason: str


def to_compare(baseline: Experiment, found: list[Experiment], names: set[str] | None,
               failed: dict[str, Failure]) -> list[Experiment]:
    """What the comparison shows: the finished experiments DVC lists (those in `names`, if
    given), and one for each of `failed`, with the params it set on the baseline's."""
    done = [e for e in found if e.done and (names is None or e.name in names) and e.name not in failed]
    return done + [Experiment(name, "", {**baseline.params, **f.params}, {}, f.reason, "failed")
                   for name, f in failed.items()]


def write_comparison(cwd: Path, names: set[str] | None = None, failed: dict[str, Failure] | None = None
                     ) -> tuple[list[str], list[list[str]]]:
    """reports/experiments.md and its figure, for the experiments of HEAD (those in `names`,
    if given) and a row for each of `failed`, each file written atomically; returns the
    table (header, rows)."""
    paths = read_params(cwd / PARAMS_FILE).paths
    baseline, found = experiments_of(exp_show(cwd))
    found = to_compare(baseline, found, names, failed or {})
    if not found:
        raise ExperimentsError("no experiments of the current commit to compare; run `make experiments` first")
    shared, rows = comparison(baseline, found, paths)
    figure = cwd / paths.experiments_figure
    with atomic_path(figure) as tmp:
        plot_curves(curves_of(found, paths, read_at(cwd))).savefig(tmp, format="png", metadata={"Software": None})
    with atomic_path(cwd / paths.experiments_report) as tmp:
        tmp.write_text(render_markdown(shared, rows, figure.name))
    return table_rows(rows)


def run_set(cwd: Path, experiments: dict[str, dict[str, Any]], sizes: dict[str, Any],
            on_line: Callable[[str], None]) -> tuple[set[str], dict[str, Failure]]:
    """Check the set, then run its experiments one after another, each a `dvc exp run --temp`
    in the foreground: (their names, those that failed and why). No queue: DVC's queue
    worker could vanish mid-set and leave `--run-all` waiting on it in silence. Earlier
    experiments of the same names (of this commit) are replaced. A set that fails its check
    is an ExperimentsError before anything changes; a failed experiment is said in one line,
    and the rest still run."""
    check_set(experiments, sizes, cwd / PARAMS_FILE)
    runs = {run: values for name, overrides in experiments.items() for run, values in runs_of(name, overrides).items()}
    replace_earlier(cwd, set(runs), on_line)
    failed = {}
    for name, values in runs.items():
        reason = run_one(cwd, name, values, sizes, on_line)
        if reason is not None:
            on_line(f"experiments: {name!r} failed: {reason}")
            failed[name] = Failure({**values, **sizes}, reason)
    return set(runs), failed


def replace_earlier(cwd: Path, names: set[str], on_line: Callable[[str], None]) -> None:
    """Remove HEAD's earlier experiments named in `names`: DVC refuses a name it has, and
    `-f` would also force every stage to run."""
    again = sorted(names & {e.name for e in experiments_of(exp_show(cwd))[1]})
    if again and stream_dvc(["exp", "remove", *again], cwd, on_line) != 0:
        raise ExperimentsError(f"dvc could not remove the earlier experiments {', '.join(again)} (its message is "
                               "above); remove them with `dvc exp remove`, or rename the entries")


def run_one(cwd: Path, name: str, values: dict[str, Any], sizes: dict[str, Any],
            on_line: Callable[[str], None]) -> str | None:
    """One experiment, every line to on_line: None if DVC recorded it, else why not (the
    stage's own one-line error, else dvc's)."""
    lines: list[str] = []  # a few hundred at most: dvc's, and a line per tenth of an epoch

    def line(text: str) -> None:
        lines.append(text)
        on_line(text)

    with Quiet(f"experiment {name!r}", line) as heard:
        status = stream_dvc(run_args(name, values, sizes), cwd, heard)
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
                             "running it (a long epoch or evaluation is quiet). If it is stuck, stop it: Ctrl-C, or cancel "
                             "the flow run")


def _span(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def failed_message(failed: dict[str, Failure]) -> str:
    """The end of a run with failures: which ones, and where to read why."""
    return (f"some experiments failed: {', '.join(sorted(failed))}. Each one's error is above and in its row "
            "of the comparison; fix the cause and run those again")


def main(argv: list[str] | None = None) -> None:
    """`hotdog experiments run [-S key=value ...] [--only NAME ...]` | `hotdog experiments compare`."""
    parser = argparse.ArgumentParser(prog="hotdog experiments", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the set as DVC experiments, one at a time, then write the comparison")
    run.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="a params.yaml value for every experiment, e.g. -S train.epochs=1")
    run.add_argument("--only", action="append", metavar="NAME", help="run only these entries of the set")
    run.add_argument("--file", type=Path, default=SET_FILE, help=f"the experiment set (default: {SET_FILE})")
    sub.add_parser("compare", help="write reports/experiments.md from the experiments of the current commit")
    args = parser.parse_args(argv)
    cwd = Path.cwd()
    try:
        names, failed = None, {}
        if args.command == "run":
            experiments = read_set(args.file)
            unknown = sorted(set(args.only or []) - set(experiments))
            if unknown:
                raise ExperimentsError(f"--only {unknown[0]!r} is not an entry of {args.file}")
            chosen = {k: v for k, v in experiments.items() if not args.only or k in args.only}
            # dvc's and the stages' own lines, as a terminal shows them; the events are for the flows.
            names, failed = run_set(cwd, chosen, parse_sets(args.sets),
                                    lambda line: None if events.parse(line) else print(line, flush=True))
        write_comparison(cwd, names, failed)
        paths = read_params(cwd / PARAMS_FILE).paths
        print(f"experiments: wrote {paths.experiments_report} and {paths.experiments_figure}")
        if failed:
            raise ExperimentsError(failed_message(failed))
    except ExperimentsError as err:
        sys.exit(f"error: experiments: {err}")
