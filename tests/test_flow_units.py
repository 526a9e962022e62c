"""The flow's pure helpers, without a Prefect server."""

import inspect
import os

import pytest
from conftest import REPO
from prefect.settings import get_current_settings
from prefect.states import Failed
from ruamel.yaml import YAML

from flows.pipeline import (
    NETWORK_STAGES,
    PARAMETER_KEYS,
    TASKS,
    collect_overrides,
    hotdog_pipeline,
    is_interrupted,
    not_run_line,
    param_type,
    parse_args,
    restored_from_run_cache,
    stage_spans,
)
from flows.repro import StageFailed, StageInterrupted, outcome
from hotdog.core import events
from hotdog.core.names import STAGES
from hotdog.core.params import read_params
from hotdog.runner.prefect_server import ANALYTICS_ENV, disable_server_telemetry


def test_each_task_is_named_for_its_dvc_stage_and_runs_in_dvc_yamls_order():
    # The flow runs TASKS[stage](stage) for each of STAGES, and the UI lists each task run
    # by its name: all of them must be dvc.yaml's stages, read here as DVC reads the file.
    stages = list(YAML(typ="safe").load((REPO / "dvc.yaml").read_text())["stages"])
    assert list(STAGES) == stages  # the order the flow runs the tasks in
    assert {key: (t.name, t.task_run_name) for key, t in TASKS.items()} == {s: (s, s) for s in stages}
    assert set(NETWORK_STAGES) <= set(stages)
    assert TASKS["download"].retries == 2 and TASKS["manifest"].retries == 0


def test_every_named_parameter_is_a_params_key_of_the_same_type():
    raw = read_params(REPO / "params.yaml").model_dump()
    signature = inspect.signature(hotdog_pipeline.fn)
    assert [name for name in signature.parameters if name not in ("params", "push")] == list(PARAMETER_KEYS)
    for name, key in PARAMETER_KEYS.items():
        section, field = key.split(".")
        assert field in raw[section]
        assert signature.parameters[name].annotation == (param_type(key) | None)
    assert param_type("train.epochs") is int and param_type("finetune.lr") is float
    assert set(PARAMETER_KEYS) < set(hotdog_pipeline.parameters.properties)


def test_the_outcome_comes_from_the_stages_events():
    started, done = events.Started(stage="download"), events.Finished(stage="download")
    assert outcome("download", [started, done], 0) is True
    assert outcome("download", [], 0) is False  # DVC found it current and did not run it
    wrong = events.Failed(stage="download", message="error: download: x.zip: sha1 mismatch")
    with pytest.raises(StageFailed, match="sha1 mismatch") as err:
        outcome("download", [started, wrong], 1)
    assert type(err.value) is StageFailed
    outage = events.Failed(stage="download", message="error: download: gave up after 5 attempts", transient=True)
    with pytest.raises(StageInterrupted, match="gave up"):
        outcome("download", [started, outage], 75)
    with pytest.raises(StageFailed, match=r"dvc repro report exited with status 255 before the stage ran"):
        outcome("report", [], 255)  # DVC itself failed, e.g. its lock was held


def test_stage_spans_cover_the_run_with_training_weighted():
    spans = stage_spans()
    assert list(spans) == list(STAGES)
    end = spans["report"][0] + spans["report"][1]
    assert end == pytest.approx(100.0) and spans[STAGES[0]][0] == 0.0
    assert spans["finetune"][1] == pytest.approx(10 * spans["manifest"][1])


def test_overrides_from_parameters_and_the_params_dict():
    named = dict(finetune_lr=None, scratch_lr=0.01, epochs=2, device=None)
    assert collect_overrides(named, {"train.weight_decay": 0.0}) == {
        "scratch.lr": 0.01, "train.epochs": 2, "train.weight_decay": 0.0}
    # A new source without a digest: a folder needs none, and the source stage asks a zip for one.
    assert collect_overrides(dict(data_url="/photos", data_sha1=None), None) == {"data.url": "/photos",
                                                                                "data.sha1": None}
    assert collect_overrides(dict(data_url="a.zip", data_sha1="f" * 40), None) == {"data.url": "a.zip",
                                                                                  "data.sha1": "f" * 40}


def test_command_line_flags():
    args = parse_args(["--scratch-lr", "1e-3", "--epochs", "2", "--device", "cpu", "--set",
                       "train.weight_decay=5e-4", "--set", "finetune.pretrained=false"])
    assert args == {"scratch_lr": 1e-3, "epochs": 2, "device": "cpu",
                    "params": {"train.weight_decay": 5e-4, "finetune.pretrained": False}}
    assert parse_args([]) == {}
    # data.sha1 may be null in params.yaml; a flag gives a digest (the union's str).
    assert parse_args(["--data-url", "/photos", "--data-sha1", "0" * 40]) == {"data_url": "/photos",
                                                                             "data_sha1": "0" * 40}
    with pytest.raises(SystemExit):
        parse_args(["--device", "gpu"])  # not one of train.device's values


def test_only_an_interrupted_stage_is_retried():
    assert is_interrupted(None, None, Failed(data=StageInterrupted("error: download: gave up after 5 attempts")))
    assert not is_interrupted(None, None, Failed(data=StageFailed("error: download: sha1 mismatch")))


def test_the_temporary_prefect_server_runs_without_telemetry(monkeypatch):
    # Offline, its telemetry logs an ERROR. With no PREFECT_API_URL, Prefect 3.9.1 starts that
    # server with this process's environment and, on top, the Prefect settings set in this
    # process (SubprocessASGIServer._run_uvicorn_command): its environment, made the same way.
    monkeypatch.setenv(ANALYTICS_ENV, "true")  # and put back as it was after the test
    disable_server_telemetry()
    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
    assert env[ANALYTICS_ENV].lower() == "false"


def test_the_predict_flow_fails_on_a_folder_that_is_not_there(tmp_path, monkeypatch):
    # It ran to "completed" with one error row, which a Run button's user would take as done.
    from flows.predict import hotdog_predict

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageFailed, match=rf"^folder=nope: no such folder in {tmp_path}; name a folder of photos"):
        hotdog_predict.fn(folder="nope")


def test_a_stage_dvc_restored_from_its_run_cache_is_not_called_up_to_date():
    # What `dvc repro --single-item finetune` prints when the params went back to ones an
    # earlier run had: the flow said "up to date, not run (nothing it uses changed)".
    assert restored_from_run_cache("Stage 'finetune' is cached - skipping run, checking out outputs")
    assert not restored_from_run_cache("Stage 'finetune' didn't change, skipping")
    assert not_run_line("finetune", True) == ("finetune: not run: DVC restored its outputs from its run cache (an "
                                              "earlier run had the same params, code and inputs)")
    assert not_run_line("finetune", False) == "finetune: up to date, not run (nothing it uses changed since dvc.lock)"
