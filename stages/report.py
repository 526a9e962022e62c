"""DVC stage `report`: reports/report.md and its PNG figures in reports/figures/, and the model
card reports/model_card.md, from the manifests and their counts, both runs' metrics,
evaluate.json and predictions.parquet. Its params are the ones the report and the card list;
data.sha1 also says whether d2l's published figures apply. The card also reads dvc.lock (DVC's
own record, so no dep), git and the installed packages' versions.
Run from the repo root: python -m stages.report
"""

from __future__ import annotations

from pathlib import Path

from hotdog.core import events
from hotdog.core.files import atomic_path
from hotdog.core.names import RUNS
from hotdog.core.params import load_params
from hotdog.core.paths import Paths
from hotdog.evaluation.card import Recipe, card_text, gather_evidence
from hotdog.evaluation.report import param_rows, read_inputs, report_text, write_figures
from hotdog.evaluation.results import is_d2l_data
from hotdog.runner.stage import run_main

SECTIONS = ("train", "finetune", "scratch")  # listed whole in the report's params table
PARAMS = ("seed", "data.url", "data.sha1", "weights", *SECTIONS)


def model_card(paths: Paths) -> Path:
    """Where the model card goes, beside the report."""
    return paths.reports / "model_card.md"


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes (tests/test_seams.py checks dvc.yaml declares the same); the
    rest of reports/ is free for other tools (the experiments comparison)."""
    return [paths.report, model_card(paths), paths.figures]


def main() -> None:
    """Read every input and render both texts, then write the figures folder, the report and
    the card, each in one move."""
    p = load_params(*PARAMS)
    inputs = read_inputs(p.paths)
    # data.url too: which photos a run was trained on is what a report is read for first.
    params = param_rows({"seed": p.seed, "data.url": p.data.url, "data.sha1": p.data.sha1},
                        {s: getattr(p, s) for s in SECTIONS})
    d2l = is_d2l_data(p.data.sha1)
    text = report_text(inputs, params, d2l)
    evidence = gather_evidence(p.paths, inputs.classes, inputs.summaries, inputs.evaluation, inputs.predictions,
                               outputs(p.paths))
    recipe = Recipe(p.seed, p.data.url, p.data.sha1, p.weights, p.train, {run: getattr(p, run) for run in RUNS})
    card = card_text(recipe, evidence, p.paths, d2l)
    events.mark("writing")  # drawing the figures is most of it
    with atomic_path(p.paths.figures) as tmp:
        tmp.mkdir()
        write_figures(tmp, p.paths.images, inputs)
    with atomic_path(p.paths.report) as tmp:
        tmp.write_text(text)
    with atomic_path(model_card(p.paths)) as tmp:
        tmp.write_text(card)
    print(f"report: wrote {p.paths.report} and {p.paths.figures}/")
    print(f"report: wrote the model card {model_card(p.paths)}")


if __name__ == "__main__":
    run_main("report", main)
