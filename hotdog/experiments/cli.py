"""`hotdog experiments`: run the chapter's exercises as DVC experiments, and compare them."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from hotdog.core import events
from hotdog.core.errors import StageError, Stopped
from hotdog.core.params import PARAMS_FILE, read_params
from hotdog.experiments.compare import write_comparison
from hotdog.experiments.run import failed_message, run_set
from hotdog.experiments.spec import SET_FILE, ExperimentsError, parse_sets, read_set


def main(argv: list[str] | None = None) -> None:
    """`hotdog experiments run [-S key=value ...] [--only NAME ...]` | `hotdog experiments compare`."""
    parser = argparse.ArgumentParser(prog="hotdog experiments", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the set as DVC experiments, one at a time, then write the comparison")
    run.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="a params.yaml value for every experiment, e.g. -S train.epochs=1")
    run.add_argument("--only", action="append", metavar="NAME", help="run only these entries of the set")
    run.add_argument("--file", type=Path, default=SET_FILE, help=f"the experiment set (default: {SET_FILE})")
    sub.add_parser("compare", help="write reports/experiments.md from the experiments of the current commit")
    args = parser.parse_args(argv)
    cwd = Path.cwd()
    # A kill, a CI cancel or a closed SSH session stops dvc and its stage too, as Ctrl-C does:
    # dvc runs in its own session (hotdog.runner.dvc_run), which no signal to this process reaches.
    # Not one the process was started ignoring: under `nohup`, a logout must not stop the set.
    previous = {signum: signal.signal(signum, _stop) for signum in (signal.SIGTERM, signal.SIGHUP)
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        names, failed = None, {}
        if args.command == "run":
            experiments = read_set(args.file)
            unknown = sorted(set(args.only or []) - set(experiments))
            if unknown:
                raise ExperimentsError(f"--only {unknown[0]!r} is not an entry of {args.file}")
            chosen = {k: v for k, v in experiments.items() if not args.only or k in args.only}
            # dvc's and the stages' own lines, as a terminal shows them; the events are for the flows.
            names, failed = run_set(cwd, chosen, parse_sets(args.sets),
                                    lambda line: None if events.parse(line) else print(line, flush=True))
        write_comparison(cwd, names, failed)
        paths = read_params(cwd / PARAMS_FILE).paths
        print(f"experiments: wrote {paths.experiments_report} and {paths.experiments_figure}")
        if failed:
            raise ExperimentsError(failed_message(failed))
    except StageError as err:  # the set, a params.yaml problem, a dvc command
        sys.exit(f"error: experiments: {err}")
    except (KeyboardInterrupt, Stopped) as err:  # dvc and its stage are stopped (runner.dvc_run.stream_dvc)
        signum = err.signum if isinstance(err, Stopped) else signal.SIGINT
        how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        print(f"error: experiments: stopped by {how}; the experiments that finished are kept (`dvc exp show`), "
              "and the one it stopped runs again by name", file=sys.stderr)
        sys.exit(128 + signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop(signum: int, frame: object) -> None:
    raise Stopped(signum)
