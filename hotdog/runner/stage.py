"""The runner every stage's `__main__` runs in: its events, its signals and its hold on the repo.

Wiring only: nothing here shapes an output, so no stage lists this module as a DVC dep
(tests/test_seams.py names the wiring set and shows that it changes no output).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

from hotdog.core import events
from hotdog.core.errors import StageError, Stopped
from hotdog.core.names import RUNS
from hotdog.core.params import load_params
from hotdog.runner import runlock


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)


def run_main(stage: str, main: Callable[[], None]) -> None:
    """Run a stage's main, with its events and its hold on the repo (hotdog.runner.runlock).

    A StageError becomes one line and exit status 1. Ctrl-C, SIGTERM and SIGHUP stop the
    stage cleanly: `finally` blocks run, so DataLoader workers are shut down and no temporary
    output is left (hotdog.core.files.atomic_path), and the exit status is 128 + the signal's
    number, as a shell reports a process it killed.
    """
    events.mark("started")
    events.emit(events.Started(stage=stage))
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # `nohup dvc repro` ignores SIGHUP: so does the stage
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
    events.emit(events.timing(stage))
    events.emit(events.Finished(stage=stage))
    # All that is left is Python's exit, and DVC waits for it: its collections walk every
    # object torch's import made (0.5 s of a torch stage's exit on a 2-core Xeon), and its
    # module teardown cost 0.15 s more after those were frozen away, plus a CUDA context's
    # teardown on a GPU. None of it saves anything: the outputs are written, closed and
    # renamed (hotdog.core.files.atomic_path), the pools and DataLoader workers are shut, and
    # the hold on the repo is released. So the process ends here, once its streams are out,
    # unless a profiler or tracer is attached (cProfile, coverage, a debugger): those write
    # what they collected at the exit.
    if sys.getprofile() is None and sys.gettrace() is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _resume_hint(stage: str) -> str:
    return "; the next run resumes after the last finished epoch" if stage in RUNS else ""


def fail(stage: str, line: str, transient: bool) -> None:
    """Say a stage failed: to the runner as an event when it asked for events (it logs the
    line), else as the line on stderr."""
    if events.enabled():
        events.emit(events.Failed(stage=stage, message=line, transient=transient))
    else:
        print(line, file=sys.stderr, flush=True)
