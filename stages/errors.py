"""User-facing errors and the entry-point wrapper every stage's `__main__` uses."""

from __future__ import annotations

import sys
from typing import Callable

# The exit status of a stage that failed in a way a later try may not (a network outage):
# EX_TEMPFAIL from sysexits.h. The Prefect flow retries a stage only on this status.
TRANSIENT_EXIT = 75


class StageError(Exception):
    """An error whose message already says what is wrong, where, and what to do."""

    exit_code = 1


def run_main(stage: str, main: Callable[[], None]) -> None:
    """Run a stage's main; a StageError becomes one line on stderr and exit status 1."""
    try:
        main()
    except StageError as err:
        print(f"error: {stage}: {err}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        print(f"error: {stage}: interrupted; outputs were not written", file=sys.stderr)
        sys.exit(130)
