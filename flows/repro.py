"""Running one DVC stage for a flow: `dvc repro --single-item <stage>`, its output streamed.

What the stage did comes from its events (hotdog.core.events) alone: whether it started, how far
it is, whether it failed and whether a retry may help. DVC's own text is passed on to the
log as it is and never parsed here, so a DVC release that rewords it changes nothing here
(flows.pipeline reads one line of it, to say a stage came from DVC's run cache).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable

from hotdog.core import events
from hotdog.runner.dvc_run import stream_dvc


class StageFailed(RuntimeError):
    """A stage failed; the message is the stage's own error line."""


class StageInterrupted(StageFailed):
    """A stage failed in a way a later try may not (the network); the task retries it."""


def project_dir() -> Path:
    """The DVC project the flow works on: the current directory, as for `dvc` itself."""
    cwd = Path.cwd()
    if not (cwd / "dvc.yaml").is_file() or not (cwd / ".dvc").is_dir():
        raise StageFailed(f"{cwd} is not the hotdog project (no dvc.yaml and .dvc/ there); "
                          "start the flow from the repo root")
    return cwd


def outcome(stage: str, seen: list[events.Event], returncode: int) -> bool:
    """Whether `stage` ran, from its events; raises StageFailed (or StageInterrupted, when
    the stage says a retry may help) when the repro failed."""
    ran = any(isinstance(e, events.Started) and e.stage == stage for e in seen)
    if returncode == 0:
        return ran
    failures = [e for e in seen if isinstance(e, events.Failed)]
    if failures:
        failure = failures[-1]
        raise (StageInterrupted if failure.transient else StageFailed)(failure.message)
    raise StageFailed(f"dvc repro {stage} exited with status {returncode} "
                      f"{'after' if ran else 'before'} the stage ran, without a stage error; see the log above")


def repro(stage: str, cwd: Path, on_text: Callable[[str], None],
          on_event: Callable[[events.Event], None], stop: threading.Event | None = None) -> bool:
    """Make DVC run `stage` if anything it uses changed; True if it ran. Event lines go to
    on_event, every other line (the stage's and DVC's text) to on_text. Setting `stop` stops
    dvc and the stage."""
    seen: list[events.Event] = []

    def on_line(line: str) -> None:
        event = events.parse(line)
        if event is None:
            on_text(line)
        else:
            seen.append(event)
            on_event(event)

    returncode = stream_dvc(["repro", "--single-item", stage], cwd, on_line, stop=stop)
    return outcome(stage, seen, returncode)
