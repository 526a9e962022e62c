"""The one channel from stages to the flow (hotdog.core.events): every event round-trips, and a
stage run with events on says what it did."""

import subprocess
import sys

import pytest
from conftest import REPO, write_params

from hotdog.core import events

ONE_OF_EACH = [
    events.Started(stage="finetune"),
    events.Progress(stage="finetune", done=0.35),
    events.Finished(stage="finetune"),
    events.Failed(stage="download", message="error: download: gave up after 5 attempts", transient=True),
    events.Timing(stage="finetune", began=1.0e9, started=1.0e9 + 0.2, writing=None, finished=1.0e9 + 5.5),
]


def test_every_event_round_trips():
    assert {type(e) for e in ONE_OF_EACH} == set(events.EVENT_TYPES)  # a new event needs a case here
    for event in ONE_OF_EACH:
        line = events.encode(event)
        assert "\n" not in line and events.parse(line) == event


@pytest.mark.parametrize("line", ["finetune epoch 1/5: batch 4/16", "Running stage 'finetune':",
                                  events.MARKER + "not json", events.MARKER + '{"kind": "exploded", "stage": "x"}',
                                  events.MARKER + '{"kind": "progress", "stage": "x", "done": 2}'])
def test_other_lines_are_not_events(line):
    assert events.parse(line) is None


def test_events_are_written_only_when_asked(capsys, monkeypatch):
    monkeypatch.delenv(events.ENV, raising=False)
    events.emit(events.Started(stage="x"))
    assert capsys.readouterr().out == ""
    monkeypatch.setenv(events.ENV, "1")
    events.emit(events.Started(stage="x"))
    assert events.parse(capsys.readouterr().out.strip()) == events.Started(stage="x")


def test_a_failing_stage_says_so_in_one_event(tmp_path):
    write_params(tmp_path / "params.yaml", {"train.epochs": "five"})
    run = subprocess.run([sys.executable, "-m", "stages.scratch"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", events.ENV: "1"})
    said = [e for e in map(events.parse, run.stdout.splitlines()) if e is not None]
    assert run.returncode == 1 and run.stderr == ""  # the event carries the line instead
    assert said == [events.Started(stage="scratch"), events.Failed(
        stage="scratch", message="error: scratch: params.yaml: key 'train.epochs': Input should be a valid "
                                 "integer (got 'five'); correct it")]
