"""The comparison of a set's experiments: read from `dvc exp show --json` and each
experiment's per-epoch file in its commit, written as reports/experiments.md with a figure.

DVC keeps the record: each experiment is a commit under refs/exps, listed by `dvc exp
show` and brought back by `dvc exp apply <name>`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

from matplotlib.figure import Figure

from hotdog.core.files import atomic_path
from hotdog.core.markdown import table
from hotdog.core.names import RUNS
from hotdog.core.params import PARAMS_FILE, read_params
from hotdog.core.paths import Paths
from hotdog.evaluation.results import RUN_TITLES
from hotdog.experiments.spec import ExperimentsError, dvc_value


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
    lines += table(header, body)
    lines += ["Test accuracy after each epoch, per experiment:", "", f"![test accuracy per epoch]({figure})", ""]
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
