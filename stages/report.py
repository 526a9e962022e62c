"""DVC stage `report`: reports/report.md and its PNG figures in reports/figures/, from the
manifests, both runs' metrics, evaluate.json and predictions.parquet; its params are the
ones the report lists, and data.sha1, which says whether d2l's published figures apply.
Run from the repo root: python -m stages.report
"""

from __future__ import annotations

from pathlib import Path

from hotdog.core.files import atomic_path
from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.evaluation.report import param_rows, read_inputs, report_text, write_figures
from hotdog.evaluation.results import is_d2l_data
from hotdog.runner.stage import run_main

SECTIONS = ("train", "finetune", "scratch")  # listed whole in the report's params table
PARAMS = ("seed", "data.sha1", *SECTIONS)


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same); the
    rest of reports/ is free for other tools (the experiments comparison)."""
    return [paths.report, paths.figures]


def main() -> None:
    """Read every input, then write the figures folder in one move and the report in another."""
    p = load_params(*PARAMS)
    inputs = read_inputs(p.paths)
    params = param_rows({"seed": p.seed, "data.sha1": p.data.sha1}, {s: getattr(p, s) for s in SECTIONS})
    text = report_text(inputs, params, is_d2l_data(p.data.sha1))
    with atomic_path(p.paths.figures) as tmp:
        tmp.mkdir()
        write_figures(tmp, p.paths.images, inputs)
    with atomic_path(p.paths.report) as tmp:
        tmp.write_text(text)
    print(f"report: wrote {p.paths.report} and {p.paths.figures}/")


if __name__ == "__main__":
    run_main("report", main)
