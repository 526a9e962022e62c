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


Event = Annotated[Union[Started, Progress, Finished, Failed], Field(discriminator="kind")]
EVENT_TYPES = (Started, Progress, Finished, Failed)
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

