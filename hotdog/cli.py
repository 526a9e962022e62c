"""The `hotdog` command: tools beside the pipeline, each a subcommand calling the library.
The pipeline itself runs with `dvc repro` (or make run) and from Prefect (make ui)."""

from __future__ import annotations

import sys
from importlib import import_module

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
    f"  {name:12} {what}" for name, (_, what) in COMMANDS.items())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    if argv[0] not in COMMANDS:
        sys.exit(f"error: hotdog: unknown command {argv[0]!r}\n{USAGE}")
    import_module(COMMANDS[argv[0]][0]).main(argv[1:])


if __name__ == "__main__":
    main()
