"""The `hotdog` command: tools beside the pipeline, each a subcommand calling the library.
The pipeline itself runs with `dvc repro` (or make run) and from Prefect (make ui)."""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

# subcommand -> (module with main(argv), what it does)
COMMANDS = {
    "predict": ("hotdog.serving.predict", "classify photos (files, folders, URLs) with the trained models"),
    "demo": ("hotdog.serving.demo", "a local page: drop a photo, see both models' verdicts (make demo)"),
    "experiments": ("hotdog.experiments.cli", "run the chapter's exercises as DVC experiments, and compare them"),
    "make-data": ("hotdog.data.synthetic", "write a photo-sized synthetic stand-in for the hotdog folder"),
    "cuda-check": ("hotdog.training.cuda_check", "check the CUDA training paths against the CPU's"),
    "worker": ("hotdog.runner.worker", "deploy prefect.yaml's flows to their work pool and run a worker here (make worker)"),
}
USAGE = "usage: hotdog {" + ",".join(COMMANDS) + "} [args]\n\n" + "\n".join(
    f"  {name:12} {what}" for name, (_, what) in COMMANDS.items()) + "\n\n  --version    print hotdog's version"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        usage_error("no command given; name one of these")
    if argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] == "--version":
        print(f"hotdog {installed_version()}")
        return
    if argv[0] not in COMMANDS:
        usage_error(f"unknown command {argv[0]!r}")
    import_module(COMMANDS[argv[0]][0]).main(argv[1:])


def usage_error(message: str) -> NoReturn:
    """Exit with 2 and the usage, as argparse does for a command line it cannot take."""
    print(f"error: hotdog: {message}\n{USAGE}", file=sys.stderr)
    sys.exit(2)


def installed_version() -> str:
    """The version pip installed, from the package's metadata (pyproject.toml's)."""
    try:
        return version("hotdog")
    except PackageNotFoundError:  # run from a checkout that pip never installed
        sys.exit("error: hotdog: the package is not installed, so it has no version; "
                 "run `pip install -e .` in the repo")


if __name__ == "__main__":
    main()
