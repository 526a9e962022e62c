"""The errors a stage stops with: one whose message says what is wrong, where and what to do
(StageError), and a request to stop (Stopped). The runner that turns them into exit
statuses and events is hotdog.runner.stage."""

from __future__ import annotations

import signal

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
    """The stage was asked to stop: SIGTERM or SIGHUP, or its run went away (hotdog.runner.runlock).
    A BaseException, as KeyboardInterrupt is, so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
