"""User-facing errors and the wrapper every stage's `__main__` runs in."""

from __future__ import annotations

import sys
from typing import Callable

from hotdog import events

# The exit status of a stage that failed in a way a later try may not (a network outage):
# EX_TEMPFAIL from sysexits.h. The Failed event says the same in words.
TRANSIENT_EXIT = 75


class StageError(Exception):
    """An error whose message already says what is wrong, where, and what to do."""

    exit_code = 1

    @property
    def transient(self) -> bool:
        """Whether a later try may succeed (a network outage, not a wrong digest)."""
        return self.exit_code == TRANSIENT_EXIT


def run_main(stage: str, main: Callable[[], None]) -> None:
    """Run a stage's main, with its events; a StageError becomes one line and exit status 1."""
    events.emit(events.Started(stage=stage))
    try:
        main()
    except StageError as err:
        fail(stage, f"error: {stage}: {err}", err.transient)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        fail(stage, f"error: {stage}: interrupted; outputs were not written", False)
        sys.exit(130)
    except Exception as err:  # a bug: keep the traceback, and still tell the runner in one line
        events.emit(events.Failed(stage=stage, message=f"error: {stage}: {type(err).__name__}: {err} "
                                                       "(an unexpected failure; the traceback is in the log)"))
        raise
    events.emit(events.Finished(stage=stage))


def fail(stage: str, line: str, transient: bool) -> None:
    """Say a stage failed: to the runner as an event when it asked for events (it logs the
    line), else as the line on stderr."""
    if events.enabled():
        events.emit(events.Failed(stage=stage, message=line, transient=transient))
    else:
        print(line, file=sys.stderr, flush=True)
