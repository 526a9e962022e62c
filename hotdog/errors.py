"""User-facing errors and the wrapper every stage's `__main__` runs in."""

from __future__ import annotations

import gc
import signal
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


class Stopped(BaseException):
    """The stage was asked to stop: SIGTERM or SIGHUP, or its run went away (hotdog.runlock).
    A BaseException, as KeyboardInterrupt is, so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def run_main(stage: str, main: Callable[[], None]) -> None:
    """Run a stage's main, with its events and its hold on the repo (hotdog.runlock).

    A StageError becomes one line and exit status 1. Ctrl-C, SIGTERM and SIGHUP stop the
    stage cleanly: `finally` blocks run, so DataLoader workers are shut down and no temporary
    output is left (hotdog.files.atomic_path), and the exit status is 128 + the signal's
    number, as a shell reports a process it killed.
    """
    # Imported here: both import this module for StageError.
    from hotdog import runlock
    from hotdog.params import load_params

    events.emit(events.Started(stage=stage))
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop)
    try:
        with runlock.stage_run(load_params().paths.run_lock):
            main()
    except StageError as err:
        fail(stage, f"error: {stage}: {err}", err.transient)
        sys.exit(err.exit_code)
    except (KeyboardInterrupt, Stopped) as err:
        signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
        fail(stage, f"error: {stage}: stopped by {signal.Signals(signum).name}; its outputs were not "
                    f"written{_resume_hint(stage)}", False)
        sys.exit(128 + signum)
    except Exception as err:  # a bug: keep the traceback, and still tell the runner in one line
        events.emit(events.Failed(stage=stage, message=f"error: {stage}: {type(err).__name__}: {err} "
                                                       "(an unexpected failure; the traceback is in the log)"))
        raise
    events.emit(events.Finished(stage=stage))
    # All that is left is Python's exit, whose garbage collections would walk every object
    # torch's import made: 0.5 s of a torch stage's exit here, and DVC waits for it. The
    # outputs are written and closed, so frozen objects lose nothing by not being collected.
    gc.freeze()


def _resume_hint(stage: str) -> str:
    from hotdog.params import RUNS

    return "; the next run resumes after the last finished epoch" if stage in RUNS else ""


def fail(stage: str, line: str, transient: bool) -> None:
    """Say a stage failed: to the runner as an event when it asked for events (it logs the
    line), else as the line on stderr."""
    if events.enabled():
        events.emit(events.Failed(stage=stage, message=line, transient=transient))
    else:
        print(line, file=sys.stderr, flush=True)
