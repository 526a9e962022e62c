"""The chapter's exercises as DVC experiments: the set file, the dvc commands, the comparison,
and the real `dvc exp` end to end on the synthetic data."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ENV, REPO, copy_run, sh
from dvc.utils.hydra import apply_overrides as dvc_set_params
from limits import E2E
from ruamel.yaml import YAML

from hotdog.core import events
from hotdog.core.params import read_params
from hotdog.experiments.cli import main as experiments_main
from hotdog.experiments.compare import (
    Experiment,
    Failure,
    comparison,
    experiments_of,
    render_markdown,
    table_rows,
    to_compare,
)
from hotdog.experiments.run import Quiet, failure_reason, run_args
from hotdog.experiments.spec import ExperimentsError, check_set, parse_sets, read_set, runs_of
from hotdog.runner import dvc_run

PATHS = read_params(REPO / "params.yaml").paths


def test_every_run_of_the_repo_set_gives_valid_params_when_dvc_sets_them(tmp_path):
    # experiments.yaml and params.yaml may change; what must hold is that `make experiments`
    # runs every entry: the set checks against params.yaml, and each run's `-S` arguments,
    # applied to params.yaml by DVC's own code for `dvc exp run -S`, give params that
    # validate and hold the set's values.
    experiments = read_set(REPO / "experiments.yaml")
    check_set(experiments, {}, REPO / "params.yaml")
    runs = {run: values for name, entry in experiments.items() for run, values in runs_of(name, entry).items()}
    for run, values in runs.items():
        args = run_args(run, values, {})
        path = tmp_path / run / "params.yaml"
        path.parent.mkdir()
        path.write_text((REPO / "params.yaml").read_text())
        dvc_set_params(path, [arg for flag, arg in zip(args, args[1:]) if flag == "-S"])
        params = read_params(path).model_dump()
        for key, value in values.items():
            section, name = key.split(".")
            assert params[section][name] == value, (run, key)


@pytest.mark.parametrize("key, value", [
    ("data.url", "/home/me/My Photos (2023)"),  # Hydra refused spaces and brackets unquoted
    ("data.url", "https://example.com/set.zip?x=1&y=2"),
    ("data.url", "~/photos"),
    ("data.url", "/photos/it's here"),
    ("data.url", "C:\\photos\\"),
    ("data.url", "/photos/${HOME}"),  # OmegaConf would look up an interpolation
    ("weights.sha256", "19637419"),  # a digest prefix of digits alone: DVC made it an int
    ("weights.sha256", "1e234567"),  # and this one .inf
    ("data.classes", ["crème brûlée", "hot dog"]),  # a list, not a grid
    ("data.classes", None),
    ("finetune.lr", 5e-05),
    ("train.epochs", 3),
    ("finetune.pretrained", False),
])
def test_dvc_sets_each_value_as_it_is(tmp_path, key, value):
    # DVC's own code for `dvc exp run -S` (Hydra's override grammar) reads what run_args passes.
    path = tmp_path / "params.yaml"
    path.write_text((REPO / "params.yaml").read_text())
    args = run_args("x", {key: value}, {})
    dvc_set_params(path, [args[-1]])
    section, name = key.split(".")
    got = YAML(typ="safe").load(path.read_text())[section][name]
    assert got == value and type(got) is type(value)


def test_a_grid_runs_one_experiment_per_value_named_as_dvc_names_them():
    assert runs_of("lr", {"finetune.lr": [1e-5, 1e-4], "train.epochs": 2}) == {
        "lr-1": {"finetune.lr": 1e-5, "train.epochs": 2}, "lr-2": {"finetune.lr": 1e-4, "train.epochs": 2}}
    assert runs_of("frozen", {"finetune.freeze_body": True}) == {"frozen": {"finetune.freeze_body": True}}


def test_run_args_run_one_experiment_of_a_grid_in_a_temporary_copy_with_the_sizes_last():
    runs = runs_of("lr", {"finetune.lr": [1e-5, 5e-5], "finetune.freeze_body": False})
    assert run_args("lr-2", runs["lr-2"], {"train.epochs": 1}) == [
        "exp", "run", "--temp", "-n", "lr-2", "-S", "finetune.lr=5e-05", "-S", "finetune.freeze_body=false",
        "-S", "train.epochs=1"]  # no grid syntax: DVC runs a grid (-S key=a,b) only from its queue
    assert run_args("head", {"finetune.head_init": "imagenet-hotdog"}, {}) == [
        "exp", "run", "--temp", "-n", "head", "-S", "finetune.head_init='imagenet-hotdog'"]
    assert parse_sets(["train.epochs=1", "finetune.head_init=imagenet-hotdog"]) == {
        "train.epochs": 1, "finetune.head_init": "imagenet-hotdog"}
    with pytest.raises(ExperimentsError, match=r"-S 'epochs': expected key=value"):
        parse_sets(["epochs"])


def test_a_failure_is_explained_by_the_stage_first_then_by_dvc():
    stage = events.MARKER + events.Failed(stage="manifest", message="error: manifest: 3 of 9 corrupt").model_dump_json()
    dvc = "ERROR: failed to reproduce 'manifest': failed to run: python -m stages.manifest, exited with 1"
    assert failure_reason(["Reproducing experiment 'strict'", stage, dvc, dvc], 255) == "error: manifest: 3 of 9 corrupt"
    assert failure_reason(["Running stage 'manifest':", dvc], 255) == dvc.removeprefix("ERROR: ")
    assert failure_reason([], 137) == "dvc exp run exited with status 137"


def test_a_quiet_command_is_said_to_be_still_running_and_a_line_resets_the_clock():
    heard: list[str] = []
    with Quiet("experiment 'lr-1'", heard.append, seconds=0.3) as on_line:
        for _ in range(4):  # lines every 0.1 s: never quiet for 0.3 s
            on_line("finetune epoch 1/1: batch 1/10")
            time.sleep(0.1)
        time.sleep(0.75)  # quiet: a note after 0.3 s, another 0.3 s later
    notes = [line for line in heard if "no output" in line]
    assert heard[:4] == ["finetune epoch 1/1: batch 1/10"] * 4 and len(notes) >= 2  # and it keeps saying so
    assert re.match(r"experiments: experiment 'lr-1': no output for \d+ s; dvc is still running it", notes[0])
    assert "If it is stuck, stop it: Ctrl-C, or cancel the flow run" in notes[0]


@pytest.mark.parametrize("text, words", [
    ("freeze: {finetune.freeze_body: true}\n2fast: {train.epochs: 1}\n", "name '2fast' must start with a letter"),
    ("lr:\n  finetune.lr: [1, 2]\n  scratch.lr: [3, 4]\n", "at most one key may hold a list"),
    ("lr:\n  finetune.lr: []\n", "must not be empty"),
    ("lr: 0.1\n", "experiment 'lr' must map params.yaml keys to values"),
    # Its row said "(baseline params)" with no metrics: the comparison reads paths.metrics.
    ("pm:\n  paths.metrics: m2\n", r"experiment 'pm' sets paths.metrics, and paths.\* moves the outputs"),
    ("w:\n  runtime.num_workers: 2\n", r"experiment 'w' sets runtime.num_workers, and runtime.\* changes no result"),
    ("[a, b]\n", "expected a mapping of experiment names"),
])
def test_a_malformed_set_names_what_is_wrong(tmp_path, text, words):
    (tmp_path / "set.yaml").write_text(text)
    with pytest.raises(ExperimentsError, match=words):
        read_set(tmp_path / "set.yaml")


def test_a_bad_key_or_value_names_the_experiment_before_anything_runs():
    params = REPO / "params.yaml"
    with pytest.raises(ExperimentsError, match=r"experiment 'typo': .*unknown key 'finetune.lrr'"):
        check_set({"typo": {"finetune.lrr": 0.1}}, {}, params)
    with pytest.raises(ExperimentsError, match=r"experiment 'grid-2': finetune.lr=-1.0, an override: Input should be greater"):
        check_set({"grid": {"finetune.lr": [1e-4, -1.0]}}, {}, params)
    with pytest.raises(ExperimentsError, match=r"experiment 'head': .*imagenet-hotdog .*set pretrained to true"):
        check_set({"head": {"scratch.head_init": "imagenet-hotdog"}}, {}, params)
    with pytest.raises(ExperimentsError, match=r"unknown key 'train.epoch'"):
        check_set({"ok": {"finetune.lr": 1e-4}}, {"train.epoch": 1}, params)


def show_entry(rev: str, name: str | None, params: dict, evaluate: dict | None = None) -> dict:
    metrics = {} if evaluate is None else {
        str(PATHS.evaluation): {"data": evaluate},
        **{str(PATHS.run_summary(run)): {"data": {"examples_per_sec_wall": 10.0 + i}}
           for i, run in enumerate(("finetune", "scratch"))}}
    return {"rev": rev, "name": name, "data": {"params": {"params.yaml": {"data": params}}, "metrics": metrics},
            "error": None}


def scores(acc: float) -> dict:
    run = {"accuracy": acc, "balanced_accuracy": acc - 0.01, "roc_auc": 0.9, "loss": 0.3}
    return {"finetune": run, "scratch": {**run, "accuracy": 0.5}}


def test_the_comparison_from_dvc_exp_show():
    base = {"train": {"epochs": 5, "image_size": 224}, "finetune": {"lr": 5e-5, "freeze_body": False}}
    quick = {"train": {"epochs": 1, "image_size": 32}}
    frozen = show_entry("b" * 40, "freeze-body", {**quick, "finetune": {"lr": 5e-5, "freeze_body": True}}, scores(0.8))
    fast = show_entry("c" * 40, "lr-1", {**quick, "finetune": {"lr": 1e-4, "freeze_body": False}}, scores(0.7))
    failed = {**show_entry("d" * 40, "broken", {**quick, "finetune": {"lr": 1.0, "freeze_body": False}}),
              "error": {"msg": "stage finetune failed"}}
    head = {**show_entry("a" * 40, "main", base), "experiments": [{"revs": [frozen]}, {"revs": [fast]},
                                                                   {"revs": [failed]}]}
    baseline, found = experiments_of([{**show_entry("workspace", None, base), "rev": "workspace"}, head])
    assert baseline.name == "main" and [e.name for e in found] == ["freeze-body", "lr-1", "broken"]
    shared, rows = comparison(baseline, found, PATHS)
    assert shared == {"train.epochs": 1, "train.image_size": 32}  # said once, above the table
    assert [r.name for r in rows] == ["broken", "freeze-body", "lr-1"]
    header, body = table_rows(rows)  # as the Prefect artifact shows it: every change in its row
    assert body[1][1] == "finetune.freeze_body=true, train.epochs=1, train.image_size=32"
    header, body = table_rows(rows, omit=shared)  # as the markdown shows it, shared ones said once
    assert header[:4] == ["experiment", "params changed", "fine-tune test acc", "fine-tune balanced acc"]
    assert body[1][:4] == ["freeze-body", "finetune.freeze_body=true", "0.800", "0.790"]
    assert body[2][:3] == ["lr-1", "finetune.lr=0.0001", "0.700"] and body[2][6] == "10.0"
    assert body[0][2] == "failed: stage finetune failed"
    text = render_markdown(shared, rows, "experiments.png")
    assert "`train.epochs=1`, `train.image_size=32`" in text and "| freeze-body |" in text
    assert "dvc exp apply" in text and "](experiments.png)" in text


def test_a_failed_experiment_dvc_did_not_record_gets_a_row_saying_why():
    base = {"train": {"epochs": 5}, "manifest": {"max_reject_fraction": 0.01}}
    quick = {**base, "train": {"epochs": 1}}
    head = {**show_entry("a" * 40, "main", base), "experiments": [
        {"revs": [show_entry("b" * 40, "freeze-body", quick, scores(0.8))]},
        {"revs": [show_entry("c" * 40, "older", quick, scores(0.7))]}]}
    baseline, found = experiments_of([head])
    failed = {"strict": Failure({"manifest.max_reject_fraction": 0.0, "train.epochs": 1}, "error: manifest: 2 corrupt")}
    shown = to_compare(baseline, found, {"freeze-body", "strict"}, failed)
    assert [(e.name, e.state) for e in shown] == [("freeze-body", "success"), ("strict", "failed")]
    shared, rows = comparison(baseline, shown, PATHS)
    _, body = table_rows(rows, omit=shared)
    assert shared == {"train.epochs": 1}
    assert body[1][:3] == ["strict", "manifest.max_reject_fraction=0.0", "failed: error: manifest: 2 corrupt"]


def test_no_commit_is_a_clear_error_and_the_baseline_is_the_commit():
    with pytest.raises(ExperimentsError, match="commit the project first"):
        experiments_of([{"rev": "workspace", "data": {}}])
    # The workspace (edited since) comes first in dvc exp show; the baseline is HEAD, its
    # params flattened to the dotted keys the comparison uses.
    workspace = {**show_entry("workspace", None, {"train": {"epochs": 2}}), "rev": "workspace"}
    head = show_entry("a" * 40, "main", {"seed": 0, "train": {"epochs": 5}, "finetune": {"lr": 5e-5}})
    assert experiments_of([workspace, head]) == (
        Experiment("main", "a" * 40, {"seed": 0, "train.epochs": 5, "finetune.lr": 5e-5}, {}, None, "success"), [])
    unnamed, _ = experiments_of([show_entry("b" * 40, None, {})])
    assert (unnamed.name, unnamed.rev) == ("bbbbbbb", "b" * 40)  # a commit without a name: its short rev


# ---------------------------------------------------------------- the real dvc exp


def hotdog_command(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "hotdog"), *args], cwd=project, env=ENV,
                          capture_output=True, text=True)


@pytest.mark.parametrize("params, words", [
    (None, "params.yaml not found; run from the repo root"),
    ("seed: five\n", "params.yaml: key 'seed': Input should be a valid integer (got 'five'); correct it"),
])
def test_a_params_problem_is_one_line(tmp_path, monkeypatch, params, words):
    if params is not None:
        (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text().replace("seed: 0\n", params))
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        experiments_main(["compare"])
    assert stopped.value.code == f"error: experiments: {tmp_path / words}"  # was a ParamsError's traceback
    assert signal.getsignal(signal.SIGTERM) is before  # the command's own handler is gone


def test_under_nohup_a_hangup_is_still_ignored(tmp_path, monkeypatch):
    # `nohup hotdog experiments run ... &`, then log out: the set must go on.
    from hotdog.experiments import cli

    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(tmp_path)
    during = []
    monkeypatch.setattr(cli, "write_comparison", lambda *args: during.append(signal.getsignal(signal.SIGHUP)) or
                        (_ for _ in ()).throw(ExperimentsError("stop here")))
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with pytest.raises(SystemExit):
            experiments_main(["compare"])
        assert during == [signal.SIG_IGN] and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


# SIGHUP takes SIGTERM's handler (test_under_nohup_a_hangup_is_still_ignored checks it is set).
@pytest.mark.parametrize("signum, background", [(signal.SIGTERM, False), (signal.SIGTERM, True)],
                         ids=["SIGTERM", "script-job"])
def test_a_kill_or_a_hangup_stops_dvc_and_its_stage_too(tmp_path, signum, background):
    # dvc runs in its own session, so no signal to `hotdog experiments` reaches it: a kill, a
    # CI cancel or a dropped SSH session once left the stage training on. A real `dvc exp run`
    # of a one-stage project whose stage runs until stopped.
    project, pid_file = tmp_path / "project", tmp_path / "stage.pid"
    project.mkdir()
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (project / "stage.py").write_text(f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
                                      "print('stage started', flush=True)\ntime.sleep(300)\n")
    (project / "dvc.yaml").write_text("stages:\n  slow:\n    cmd: python stage.py\n    params: [train.epochs]\n"
                                      "    outs: [out.txt]\n")
    (project / "set.yaml").write_text("one:\n  train.epochs: 2\n")
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
        sh(project, *args)
    # A script's `hotdog experiments run ... &` starts with SIGINT ignored, and so would dvc:
    # stopped by SIGINT, it would last until the SIGKILL 15 s later.
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
    run = subprocess.Popen([str(Path(sys.executable).parent / "hotdog"), "experiments", "run", "--file", "set.yaml"],
                           cwd=project, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           preexec_fn=ignore_sigint)
    began = None
    said = []
    for line in run.stdout:
        said.append(line)
        if "stage started" in line:
            run.send_signal(signum)  # to this process alone, as `kill` or a closed terminal sends it
            began = time.monotonic()
            break
    said += run.stdout.readlines()
    assert run.wait(timeout=60) == 128 + signum, "".join(said)
    name = signal.Signals(signum).name
    assert said[-1].startswith(f"error: experiments: stopped by {name}; the experiments that finished are kept")
    assert "Traceback" not in "".join(said)
    stage = int(pid_file.read_text())
    deadline = time.monotonic() + 10  # stop_group gave SIGTERM, then SIGKILL, and waited
    while Path(f"/proc/{stage}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{stage}").exists(), "the stage outlived the command"
    assert time.monotonic() - began < dvc_run.STOP_SECONDS, "stopped only by the SIGKILL"
    if not background:  # DVC removed its temporary copy of the repo (on SIGTERM it left one at every stop)
        left = [p.name for p in (project / ".dvc/tmp/exps/standalone").glob("tmp*")]
        assert left == [], left


@pytest.mark.timeout(E2E)
def test_make_experiments_end_to_end(pipeline_run, tmp_path):
    project = copy_run(pipeline_run, tmp_path / "project")  # run and committed: the baseline
    # freeze-body, one whose manifest stage fails (the synthetic data holds a corrupt image
    # per split, more than a fraction of 0 allows), then a grid (named as DVC names it): the
    # ones after a failure still run. The grid's values change the manifest stage's param and
    # not its files, so DVC re-runs that stage alone: a grid over a training param would train
    # twice more and show nothing this does not.
    (project / "set.yaml").write_text("freeze-body:\n  finetune.freeze_body: true\n"
                                      "strict:\n  manifest.max_reject_fraction: 0.0\n"
                                      "lenient:\n  manifest.max_reject_fraction: [0.3, 0.5]\n")
    before = (project / "params.yaml").read_bytes()
    bad = hotdog_command(project, "experiments", "run", "--file", "set.yaml", "-S", "train.epoch=1")
    assert bad.returncode == 1 and "unknown key 'train.epoch'" in bad.stderr
    assert "Reproducing" not in bad.stdout and experiments_of(show(project))[1] == []  # nothing ran

    run = hotdog_command(project, "experiments", "run", "--file", "set.yaml", "-S", "train.epochs=1")
    assert run.returncode == 1 and "error: experiments: some experiments failed: strict." in run.stderr
    assert "body frozen (fc only)" in run.stdout and "@hotdog-event" not in run.stdout
    assert "experiments: 'strict' failed: error: manifest: 1 of " in run.stdout  # one line, the stage's error
    assert run.stdout.index("'strict' failed") < run.stdout.index("Reproducing experiment 'lenient-1'")
    assert (project / "params.yaml").read_bytes() == before  # the workspace is left as it was
    by_name = {e.name: e for e in experiments_of(show(project))[1]}
    # A failed `dvc exp run --temp` is not recorded; the output and the comparison say why.
    assert {n: e.state for n, e in by_name.items()} == {"freeze-body": "success", "lenient-1": "success",
                                                         "lenient-2": "success"}
    assert by_name["freeze-body"].params["finetune.freeze_body"] is True
    assert [by_name[f"lenient-{i}"].params["manifest.max_reject_fraction"] for i in (1, 2)] == [0.3, 0.5]
    frozen = by_name["freeze-body"].metrics["metrics/evaluate.json"]
    assert 0 <= frozen["finetune"]["balanced_accuracy"] <= 1 and frozen["finetune"]["majority_accuracy"] == 0.5
    table = (project / "reports/experiments.md").read_text()
    assert "| freeze-body | finetune.freeze_body=true |" in table
    assert "| lenient-2 | manifest.max_reject_fraction=0.5 |" in table
    assert "| strict | manifest.max_reject_fraction=0.0 | failed: error: manifest: 1 of " in table
    assert (project / "reports/experiments.png").stat().st_size > 10_000

    # The set again, stopped by Ctrl-C while it trains its first entry: each earlier experiment
    # is replaced only as its own run starts, so those it had not reached keep their results.
    stopped = subprocess.Popen([str(Path(sys.executable).parent / "hotdog"), "experiments", "run", "--file",
                                "set.yaml", "-S", "train.epochs=40"], cwd=project, env=ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    said = []
    for line in stopped.stdout:  # the time limit ends a run that never trains
        said.append(line)
        if line.startswith("finetune epoch 1/40"):
            os.killpg(stopped.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
            break
    said += stopped.stdout.readlines()
    assert stopped.wait(timeout=60) == 130, "".join(said)
    assert "stopped by Ctrl-C; the experiments that finished are kept" in said[-1] and "Traceback" not in "".join(said)
    kept = {e.name: e for e in experiments_of(show(project))[1] if e.state == "success"}
    assert sorted(kept) == ["lenient-1", "lenient-2"] and kept["lenient-1"].rev == by_name["lenient-1"].rev

    # Again, one entry: it runs under its name, though DVC lists the stopped run as running
    # (no record to remove behind it); DVC's run cache restores the earlier outputs.
    again = hotdog_command(project, "experiments", "run", "--file", "set.yaml", "--only", "freeze-body")
    assert again.returncode == 0, again.stdout + again.stderr
    after = {e.name: e for e in experiments_of(show(project))[1] if e.state == "success"}
    assert sorted(after) == ["freeze-body", "lenient-1", "lenient-2"]
    assert after["lenient-1"].rev == by_name["lenient-1"].rev
    assert after["freeze-body"].metrics["metrics/evaluate.json"] == frozen

    sh(project, "dvc", "exp", "apply", "freeze-body")
    assert "freeze_body: true" in (project / "params.yaml").read_text()
    applied = json.loads((project / "metrics/evaluate.json").read_text())
    # `dvc exp show` leaves out list values (each run's classes): the rest is the experiment's.
    assert {run: {k: v for k, v in m.items() if not isinstance(v, list)} for run, m in applied.items()} == frozen
    assert applied["finetune"]["classes"] == ["hotdog", "not-hotdog"]


def show(project: Path) -> list[dict]:
    return json.loads(sh(project, "dvc", "exp", "show", "--json"))


def test_a_one_value_list_is_no_grid_and_names_must_not_clash():
    assert runs_of("lr", {"finetune.lr": [1e-4]}) == {"lr": {"finetune.lr": 1e-4}}
    assert run_args("lr", runs_of("lr", {"finetune.lr": [1e-4]})["lr"], {}) == ["exp", "run", "--temp", "-n", "lr",
                                                                             "-S", "finetune.lr=0.0001"]
    params = REPO / "params.yaml"
    with pytest.raises(ExperimentsError, match=r"two experiments would both be named 'a-1'"):
        check_set({"a": {"finetune.lr": [1e-4, 1e-3]}, "a-1": {"scratch.lr": 1e-4}}, {}, params)
    with pytest.raises(ExperimentsError, match=r"'lr' is a grid over finetune.lr; do not set finetune.lr for all"):
        check_set({"lr": {"finetune.lr": [1e-4, 1e-3]}}, {"finetune.lr": 1e-4}, params)
    with pytest.raises(ExperimentsError, match="strings without commas"):
        check_set({"odd": {"data.url": "a,b"}}, {}, params)


def test_only_finished_experiments_are_compared():
    def group(name: str, state: str | None) -> dict:
        return {"revs": [show_entry(name[0] * 40, name, {}, scores(0.6))],
                "executor": None if state is None else {"state": state}}
    head = {**show_entry("a" * 40, "main", {}),
            "experiments": [group("old", None), group("run", "running"), group("wait", "queued"),
                            group("bad", "failed"), group("new", "success")]}
    _, found = experiments_of([head])
    assert {e.name: (e.state, e.done) for e in found} == {
        "old": ("success", True), "run": ("running", False), "wait": ("queued", False),
        "bad": ("failed", True), "new": ("success", True)}
    assert next(e for e in found if e.name == "bad").error == "failed"


def test_an_exercise_that_does_not_fit_the_data_is_skipped_in_one_line():
    from hotdog.experiments.run import applicable

    runs = {"imagenet-head": {"finetune.head_init": "imagenet-hotdog"}, "frozen": {"finetune.freeze_body": True}}
    said = []
    assert applicable(runs, ("cat", "dog", "fox"), said.append) == {"frozen": {"finetune.freeze_body": True}}
    assert said == ["experiments: 'imagenet-head' skipped: finetune.head_init: head_init imagenet-hotdog starts the "
                    "head from ImageNet's hotdog class, which fits the classes hotdog and not-hotdog only, not cat, "
                    "dog, fox"]
    said.clear()
    assert applicable(runs, ("not-hotdog", "hotdog"), said.append) == runs and said == []
    assert applicable(runs, None, said.append) == runs and said == []  # no manifest yet: the stage decides
