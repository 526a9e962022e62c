"""A flow learns what a stage did from the stage's events alone (flows/repro.py): DVC's own
words go to the log as they are and decide nothing, so a DVC release that rewords them, or a
stage that prints something like them, changes no outcome."""

from pathlib import Path

import pytest

from flows import repro as flow
from flows.repro import StageFailed, StageInterrupted
from hotdog.core import events

STARTED, FINISHED = events.Started(stage="download"), events.Finished(stage="download")
FAILED = events.Failed(stage="download", message="error: download: x.zip: sha1 mismatch")
OUTAGE = events.Failed(stage="download", message="error: download: gave up after 5 attempts", transient=True)
# DVC 3's words for a stage that ran and failed, one that ran, and one it skipped.
DVC_FAILED = ["Running stage 'download':", "> python -m stages.download",
              "ERROR: failed to reproduce 'download': failed to run: python -m stages.download, exited with 1"]
DVC_RAN = ["Running stage 'download':", "> python -m stages.download", "Updating lock file 'dvc.lock'"]
DVC_SKIPPED = ["Stage 'download' didn't change, skipping", "Data and pipelines are up to date."]


def read(monkeypatch, lines: list, returncode: int):
    """flows.repro.repro("download") over a `dvc` that prints `lines` (text, or events as a
    stage writes them) and exits with `returncode`: (its result or error, the text it
    logged, the events it passed on, the dvc arguments)."""
    asked = []

    def stream_dvc(args, cwd, on_line, stop=None):
        asked.append(args)
        for line in lines:
            on_line(line if isinstance(line, str) else events.encode(line))
        return returncode

    monkeypatch.setattr(flow, "stream_dvc", stream_dvc)
    logged, seen = [], []
    try:
        result = flow.repro("download", Path("."), logged.append, seen.append)
    except StageFailed as err:
        result = err
    assert asked == [["repro", "--single-item", "download"]]
    return result, logged, seen


@pytest.mark.parametrize("lines", [DVC_FAILED, DVC_RAN, DVC_SKIPPED])
def test_without_events_the_stage_did_not_run_whatever_dvc_says(monkeypatch, lines):
    result, logged, seen = read(monkeypatch, lines, 0)
    assert result is False and seen == []
    assert logged == lines  # DVC's words reach the log unchanged


@pytest.mark.parametrize("lines", [DVC_FAILED, DVC_SKIPPED])
def test_events_of_a_run_that_finished_mean_it_ran_whatever_dvc_says(monkeypatch, lines):
    result, logged, seen = read(monkeypatch, [lines[0], STARTED, *lines[1:], FINISHED], 0)
    assert result is True and seen == [STARTED, FINISHED] and logged == lines


@pytest.mark.parametrize("failure, kind", [(FAILED, StageFailed), (OUTAGE, StageInterrupted)])
def test_a_failure_is_the_stages_own_event_not_dvcs_error(monkeypatch, failure, kind):
    # DVC says the stage ran fine; the stage's event says it failed, and whether a retry may help.
    result, logged, seen = read(monkeypatch, [*DVC_RAN[:2], STARTED, failure, DVC_RAN[2]], 1)
    assert type(result) is kind and str(result) == failure.message
    assert seen == [STARTED, failure] and logged == DVC_RAN


def test_dvcs_error_without_an_event_is_never_the_message(monkeypatch):
    # DVC says it ran the stage and quotes a failure, but no stage event came: DVC itself
    # failed before the stage (a held lock, a broken dvc.yaml), and the message says only that.
    result, logged, _ = read(monkeypatch, DVC_FAILED, 255)
    assert type(result) is StageFailed
    assert str(result).startswith("dvc repro download exited with status 255 before the stage ran")
    assert "failed to reproduce" not in str(result) and logged == DVC_FAILED
