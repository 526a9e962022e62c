"""The flow's pure helpers, without a Prefect server."""

import pytest
from conftest import REPO
from test_seams import STAGES as SEAM_STAGES

from flows.pipeline import (
    NETWORK_STAGES,
    PARAMETER_KEYS,
    STAGES,
    TASKS,
    StageFailed,
    StageInterrupted,
    collect_overrides,
    hotdog_pipeline,
    parse_args,
    stage_failure,
    stage_spans,
    training_fraction,
)
from stages.params import read_params


def test_one_task_per_stage_in_dvc_order():
    assert list(STAGES) == SEAM_STAGES  # the order tests/test_seams.py pins for dvc.yaml
    assert [TASKS[s].name for s in STAGES] == list(STAGES)
    assert set(NETWORK_STAGES) <= set(STAGES)
    assert TASKS["download"].retries == 2 and TASKS["manifest"].retries == 0


def test_every_named_parameter_sets_an_existing_key():
    raw = read_params(REPO / "params.yaml").model_dump()
    for key in PARAMETER_KEYS.values():
        section, name = key.split(".")
        assert name in raw[section]
    assert set(PARAMETER_KEYS) < set(hotdog_pipeline.parameters.properties)


def test_training_progress_from_log_lines():
    assert training_fraction("finetune epoch 1/5: batch 5/10") == pytest.approx(0.1)
    assert training_fraction("scratch epoch 2/5: loss 0.4, train acc 0.8, ...") == pytest.approx(0.4)
    assert training_fraction("finetune epoch 5/5: batch 10/10") == pytest.approx(1.0)
    assert training_fraction("Running stage 'finetune':") is None


def test_stage_spans_cover_the_run_with_training_weighted():
    spans = stage_spans()
    assert list(spans) == list(STAGES)
    end = spans["report"][0] + spans["report"][1]
    assert end == pytest.approx(100.0) and spans["download"][0] == 0.0
    assert spans["finetune"][1] == pytest.approx(10 * spans["manifest"][1])


def test_a_failure_carries_the_stages_own_message():
    lines = ["Running stage 'download':", "> python -m stages.download",
             "error: download: x.zip: sha1 mismatch: expected a, got b; check data.url",
             "ERROR: failed to reproduce 'download': failed to run: python -m stages.download, exited with 1"]
    err = stage_failure("download", lines, 255)
    assert type(err) is StageFailed and str(err) == lines[2]
    lines[-1] = lines[-1].replace("exited with 1", "exited with 75")
    assert isinstance(stage_failure("download", lines, 255), StageInterrupted)
    assert str(stage_failure("report", ["ERROR: lock held"], 255)) == "ERROR: lock held"
    assert "exited with status 3" in str(stage_failure("report", [], 3))


def test_overrides_from_parameters_and_the_params_dict():
    named = dict(finetune_lr=None, scratch_lr=0.01, epochs=2, device=None)
    assert collect_overrides(named, {"train.weight_decay": 0.0}) == {
        "scratch.lr": 0.01, "train.epochs": 2, "train.weight_decay": 0.0}


def test_command_line_flags():
    args = parse_args(["--scratch-lr", "1e-3", "--epochs", "2", "--set", "train.weight_decay=5e-4",
                       "--set", "finetune.pretrained=false"])
    assert args == {"scratch_lr": 1e-3, "epochs": 2,
                    "params": {"train.weight_decay": 5e-4, "finetune.pretrained": False}}
    assert parse_args([]) == {}


def test_only_an_interrupted_stage_is_retried():
    from prefect.states import Failed

    from flows.pipeline import is_interrupted

    assert is_interrupted(None, None, Failed(data=StageInterrupted("error: download: gave up after 5 attempts")))
    assert not is_interrupted(None, None, Failed(data=StageFailed("error: download: sha1 mismatch")))
