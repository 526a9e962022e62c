"""The one channel from a stage to whatever runs it: JSON lines on stdout after a marker.

A stage writes events only when HOTDOG_EVENTS=1 is in its environment (the Prefect flow
sets it for the `dvc repro` it starts), so a terminal shows just the human lines. The
reader (flows/repro.py) takes what a stage did from these events alone: that it started,
how far it is, and whether it failed and if a retry may help. The human lines around them
are for people and are never parsed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

ENV = "HOTDOG_EVENTS"
MARKER = "@hotdog-event "


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str


class Started(_Event):
    """The stage's command began (DVC found something it uses changed)."""

    kind: Literal["started"] = "started"


class Progress(_Event):
    """The share of the stage's work done so far, from 0 to 1."""

    kind: Literal["progress"] = "progress"
    done: float = Field(ge=0.0, le=1.0)


class Finished(_Event):
    """The stage completed and wrote its outputs."""

    kind: Literal["finished"] = "finished"


class Failed(_Event):
    """The stage failed; `message` is its one-line error. `transient`: a later try may not fail."""

    kind: Literal["failed"] = "failed"
    message: str
    transient: bool = False


class Timing(_Event):
    """When the stage's process did what, in seconds since the epoch, read in that process,
    just before Finished: `began` (the process started; None where the OS does not say),
    `started` (its first line of work, the Started event), `writing` (its work was done and
    it began to write its outputs; None for a stage that writes as it works) and `finished`.
    The torch stages also say when their heavy imports were done (`imported`) and when their
    inputs were read and their device started (`ready`); None for the others.
    benchmarks/e2e.py draws a `dvc repro`'s timeline from these."""

    kind: Literal["timing"] = "timing"
    began: float | None
    started: float
    writing: float | None
    finished: float
    imported: float | None = None
    ready: float | None = None


Event = Annotated[Union[Started, Progress, Finished, Failed, Timing], Field(discriminator="kind")]
EVENT_TYPES = (Started, Progress, Finished, Failed, Timing)
_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def enabled() -> bool:
    """Whether this process was asked to write events."""
    return os.environ.get(ENV) == "1"


def encode(event: _Event) -> str:
    """The event as one line of text."""
    return MARKER + event.model_dump_json()


def parse(line: str) -> Event | None:
    """The event a line carries, or None for any other line (a stage's or DVC's own text)."""
    if not line.startswith(MARKER):
        return None
    try:
        return _ADAPTER.validate_json(line[len(MARKER):])
    except ValidationError:
        return None  # a marker with garbage after it: text, not an event


def emit(event: _Event) -> None:
    """Write the event to stdout when events are enabled."""
    if enabled():
        print(encode(event), file=sys.stdout, flush=True)


# The times a Timing event reports, kept as the stage runs (one stage per process).
_times: dict[str, float] = {}


def process_began() -> float | None:
    """When this process started, as time.time() would have said then; None off Linux.

    /proc/self/stat's field 22 is the start in clock ticks since boot, and CLOCK_BOOTTIME
    is now on the same clock, so their difference is the process's age (to 1/CLK_TCK)."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # the name, in parentheses, may hold spaces
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age


def mark(moment: Literal["started", "imported", "ready", "writing"]) -> None:
    """Note the time of a moment in this stage's run; the Timing event reports it. In order:
    `started` (run_main), `imported` (a stage's torch and libraries, imported inside main),
    `ready` (its inputs read and its device started), `writing` (its work is done and its
    outputs are next). The first mark of each counts."""
    _times.setdefault(moment, time.time())


def timing(stage: str) -> Timing:
    """The Timing event for this process's stage, as of now."""
    now = time.time()
    return Timing(stage=stage, began=process_began(), started=_times.get("started", now),
                  writing=_times.get("writing"), finished=now, imported=_times.get("imported"),
                  ready=_times.get("ready"))
