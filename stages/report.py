"""DVC stage `report`: reports/report.md and its PNG figures (the whole folder, atomically),
from the manifests, both runs' metrics, evaluate.json and predictions.parquet; its params
are the ones the report lists. Run from the repo root: python -m stages.report
"""

from __future__ import annotations

from pathlib import Path

from hotdog.errors import run_main
from hotdog.files import atomic_path
from hotdog.params import Paths, load_params
from hotdog.report import param_rows, read_inputs, write_report

PARAMS = ("seed", "train", "finetune", "scratch")


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes: the whole reports folder."""
    return [paths.reports]


def main() -> None:
    """Read every input, then write the report folder in one move."""
    p = load_params(*PARAMS)
    inputs = read_inputs(p.paths)
    params = param_rows(p.seed, {section: getattr(p, section) for section in PARAMS[1:]})
    with atomic_path(p.paths.reports) as tmp:
        write_report(tmp, p.paths.report.relative_to(p.paths.reports).as_posix(), p.paths.images, inputs, params)
    print(f"report: wrote {p.paths.report} and {p.paths.figures}/")


if __name__ == "__main__":
    run_main("report", main)
