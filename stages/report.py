"""Report stage: reads the manifests, both runs' metrics, evaluate.json and predictions.parquet;
writes reports/report.md and its PNG figures (the whole folder atomically).
Run from the repo root: `python -m stages.report` (DVC: `dvc repro report`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from matplotlib.figure import Figure  # without pyplot: Agg canvas, no global state
from PIL import Image, UnidentifiedImageError

from stages.errors import StageError, run_main
from stages.files import atomic_path
from stages.params import CLASSES, RUNS, SPLITS, Paths, load_params
from stages.schema import MANIFEST, PREDICTIONS, read_table

SECTIONS = ("seed", "train", "finetune", "scratch")

# Published in d2l's "Fine-Tuning" page (the seed); measured there on two GPUs with
# nn.DataParallel, so the speeds are not comparable to ours, only the accuracies.
SEED_PUBLISHED = {
    "finetune": {"loss": 0.220, "train_acc": 0.915, "test_acc": 0.939, "examples_per_sec": 999.1},
    "scratch": {"loss": 0.374, "train_acc": 0.839, "test_acc": 0.843, "examples_per_sec": 1623.8},
}
RUN_TITLES = {"finetune": "fine-tune", "scratch": "scratch"}
# The stage to re-run when an input is missing or malformed (names as in dvc.yaml);
# each run's metrics come from the stage named after the run.
PRODUCERS = {"images": "download", "manifest": "manifest", "evaluate": "evaluate"}

SAMPLES_PER_CLASS = 8
MAX_MISCLASSIFIED = 32
GRID_COLUMNS = 8
THUMBNAIL_PX = 160
DPI = 100
FIG_SAMPLES = "figures/samples.png"
FIG_CURVES = "figures/curves.png"
FIG_CONFUSION = "figures/confusion.png"


def fig_misclassified(run: str) -> str:
    """Report-relative path of a run's misclassified-images figure."""
    return f"figures/misclassified_{run}.png"


def outputs(paths: Paths) -> list[Path]:
    """What this stage writes: the whole reports folder."""
    return [paths.reports]


# ---------------------------------------------------------------- reading inputs


def _missing(path: Path, stage: str) -> StageError:
    return StageError(f"{path} is missing; run `dvc repro {stage}`")


def _malformed(path: Path, stage: str, what: str) -> StageError:
    return StageError(f"{path} is malformed ({what}); re-run `dvc repro {stage}`")


def _load_json(path: Path, stage: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise _missing(path, stage) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _malformed(path, stage, f"not valid JSON: {err}") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(obj: Any, numbers: Iterable[str], strings: Iterable[str], where: str) -> str | None:
    """The first problem with `obj`'s fields as a phrase, or None when it is fine."""
    if not isinstance(obj, dict):
        return f"{where.rstrip('.') or 'top level'}: expected an object"
    for key in numbers:
        if not _is_number(obj.get(key)):
            return f"{where}{key}: expected a number, got {obj.get(key)!r}"
    for key in strings:
        if not isinstance(obj.get(key), str):
            return f"{where}{key}: expected a string, got {obj.get(key)!r}"
    return None


def _epochs_problem(epochs: Any) -> str | None:
    if not isinstance(epochs, list) or not epochs:
        return "expected a non-empty list of epochs"
    for i, row in enumerate(epochs):
        problem = _check(row, ("epoch", "loss", "train_acc", "test_acc"), (), f"[{i}].")
        if problem:
            return problem
    return None


def _evaluation_problem(evaluation: Any) -> str | None:
    if not isinstance(evaluation, dict):
        return "expected an object keyed by run"
    for run in RUNS:
        m = evaluation.get(run)
        problem = _check(m, ("accuracy", "loss", "roc_auc", "images"), ("device", "precision"), f"{run}.")
        if problem:
            return problem
        for cls in CLASSES:
            per_class = m["per_class"].get(cls) if isinstance(m.get("per_class"), dict) else None
            actual = m["confusion"].get(cls) if isinstance(m.get("confusion"), dict) else None
            problem = _check(per_class, ("precision", "recall", "f1", "support"), (), f"{run}.per_class.{cls}.")
            problem = problem or _check(actual, CLASSES, (), f"{run}.confusion.{cls}.")
            if problem:
                return problem
    return None


def read_runs(paths: Paths) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """Each run's per-epoch metrics and summary, checked."""
    epochs, summaries = {}, {}
    for run in RUNS:
        stage = run  # dvc.yaml names each run's training stage after the run
        epochs[run] = _load_json(paths.run_epochs(run), stage)
        problem = _epochs_problem(epochs[run])
        if problem:
            raise _malformed(paths.run_epochs(run), stage, problem)
        summaries[run] = _load_json(paths.run_summary(run), stage)
        numbers = ("loss", "train_acc", "examples_per_sec", "examples_per_sec_wall")
        problem = _check(summaries[run], numbers, ("device", "precision"), "")
        if problem:
            raise _malformed(paths.run_summary(run), stage, problem)
    return epochs, summaries


def read_evaluation(paths: Paths) -> dict:
    """evaluate.json, checked."""
    evaluation = _load_json(paths.evaluation, PRODUCERS["evaluate"])
    problem = _evaluation_problem(evaluation)
    if problem:
        raise _malformed(paths.evaluation, PRODUCERS["evaluate"], problem)
    return evaluation


def read_manifest(path: Path) -> list[dict]:
    """A split's manifest rows (path, label, class_name), schema-checked."""
    table = read_table(path, MANIFEST, PRODUCERS["manifest"])
    return table.select(["path", "label", "class_name"]).to_pylist()


def read_predictions(paths: Paths) -> list[dict]:
    """predictions.parquet, schema-checked, with rows for every run."""
    table = read_table(paths.predictions, PREDICTIONS, PRODUCERS["evaluate"])
    rows = table.select(["path", "label", "model", "predicted", "prob_hotdog"]).to_pylist()
    for run in RUNS:
        if not any(r["model"] == run for r in rows):
            raise _malformed(paths.predictions, PRODUCERS["evaluate"], f"no rows for model {run!r}")
    return rows


def load_thumbnail(path: Path, size: int = THUMBNAIL_PX) -> Image.Image:
    """An image as RGB, shrunk to fit `size` pixels (grey, palette and CMYK files exist)."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise _missing(path, PRODUCERS["images"]) from None
    except (UnidentifiedImageError, OSError) as err:
        raise _malformed(path, PRODUCERS["images"], f"cannot decode: {err}") from None
    rgb.thumbnail((size, size))
    return rgb


# ---------------------------------------------------------------- pure selection


def select_samples(manifest: Sequence[dict], n: int = SAMPLES_PER_CLASS) -> tuple[list[dict], list[dict]]:
    """The seed's picks: the first n hotdog rows and the last n not-hotdog rows, last first."""
    hotdogs = [r for r in manifest if r["label"] == 0][:n]
    others = [r for r in manifest if r["label"] == 1]
    return hotdogs, others[::-1][:n]


def mistake_confidence(row: dict) -> float:
    """The probability the model gave to the class it predicted."""
    p = float(row["prob_hotdog"])
    return p if row["predicted"] == 0 else 1.0 - p


def select_misclassified(predictions: Sequence[dict], run: str, limit: int = MAX_MISCLASSIFIED) -> list[dict]:
    """A run's wrong predictions, most confident first, ties by path, at most `limit`."""
    wrong = [r for r in predictions if r["model"] == run and r["predicted"] != r["label"]]
    wrong.sort(key=lambda r: (-mistake_confidence(r), r["path"]))
    return wrong[:limit]


def mistake_counts(predictions: Sequence[dict], limit: int = MAX_MISCLASSIFIED) -> dict[str, dict]:
    """Per run: images, how many were misclassified, and how many the figure shows."""
    counts = {}
    for run in RUNS:
        rows = [r for r in predictions if r["model"] == run]
        wrong = sum(r["predicted"] != r["label"] for r in rows)
        counts[run] = {"images": len(rows), "wrong": wrong, "shown": min(wrong, limit)}
    return counts


def class_counts(manifests: dict[str, Sequence[dict]]) -> dict[str, dict[str, int]]:
    """Images per split and class name."""
    return {
        split: {cls: sum(r["label"] == label for r in rows) for label, cls in enumerate(CLASSES)}
        for split, rows in manifests.items()
    }


def param_rows(params: Any) -> list[tuple[str, str]]:
    """(dotted key, value) for seed, train.*, finetune.* and scratch.*."""
    rows = [("seed", str(params.seed))]
    for section in SECTIONS[1:]:
        for key, value in getattr(params, section).model_dump().items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            rows.append((f"{section}.{key}", text))
    return rows


# ---------------------------------------------------------------- markdown


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


COMPARISON_HEADER = ("run", "train loss", "train acc", "test acc", "ROC-AUC",
                     "examples/sec", "examples/sec (wall)", "device", "precision")


def comparison_rows(summaries: dict, evaluation: dict) -> list[tuple[str, ...]]:
    """Both runs and d2l's published figures, one row each, as formatted strings."""
    rows = []
    for run in RUNS:
        s, m, seed = summaries[run], evaluation[run], SEED_PUBLISHED[run]
        rows.append((f"{RUN_TITLES[run]} (ours)", f"{s['loss']:.3f}", f"{s['train_acc']:.3f}",
                     f"{m['accuracy']:.3f}", f"{m['roc_auc']:.3f}", f"{s['examples_per_sec']:.1f}",
                     f"{s['examples_per_sec_wall']:.1f}", s["device"], s["precision"]))
        rows.append((f"{RUN_TITLES[run]} (d2l)", f"{seed['loss']:.3f}", f"{seed['train_acc']:.3f}",
                     f"{seed['test_acc']:.3f}", "—", f"{seed['examples_per_sec']:.1f}", "—",
                     "2 GPUs", "fp32"))
    return rows


def _comparison_table(summaries: dict, evaluation: dict) -> list[str]:
    return _table(COMPARISON_HEADER, comparison_rows(summaries, evaluation))


def _per_class_table(evaluation: dict) -> list[str]:
    rows = [
        (RUN_TITLES[run], cls, f"{pc['precision']:.3f}", f"{pc['recall']:.3f}", f"{pc['f1']:.3f}",
         int(pc["support"]))
        for run in RUNS
        for cls, pc in ((c, evaluation[run]["per_class"][c]) for c in CLASSES)
    ]
    return _table(("run", "class", "precision", "recall", "F1", "support"), rows)


def _data_table(counts: dict[str, dict[str, int]]) -> list[str]:
    rows = [(split, *(c[cls] for cls in CLASSES), sum(c.values())) for split, c in counts.items()]
    return _table(("split", *CLASSES, "total"), rows)


def _figures_section(mistakes: dict[str, dict]) -> list[str]:
    lines = [
        f"Training images: the first {SAMPLES_PER_CLASS} hotdogs and the last "
        f"{SAMPLES_PER_CLASS} not-hotdogs, as the seed shows them.", "",
        f"![training samples]({FIG_SAMPLES})", "",
        "Per-epoch training loss, train accuracy and test accuracy.", "",
        f"![training curves]({FIG_CURVES})", "",
        "Confusion matrices on the test set (rows: actual, columns: predicted).", "",
        f"![confusion matrices]({FIG_CONFUSION})", "",
    ]
    for run in RUNS:
        c, title = mistakes[run], RUN_TITLES[run]
        if c["wrong"] == 0:
            lines += [f"{title}: no misclassified test images (of {c['images']}).", ""]
            continue
        lines += [f"{title}: {c['wrong']} of {c['images']} test images misclassified; the "
                  f"{c['shown']} most confident mistakes, captioned true → predicted (p_hotdog).", "",
                  f"![{title} misclassified]({fig_misclassified(run)})", ""]
    return lines


def render_markdown(summaries: dict, evaluation: dict, counts: dict, params: list[tuple[str, str]],
                    mistakes: dict[str, dict]) -> str:
    """The whole report.md text from in-memory inputs."""
    lines = [
        "# Hotdog recognition: fine-tuning vs training from scratch", "",
        "ResNet-18 fine-tuned from ImageNet weights and trained from scratch on d2l's hotdog "
        "data set; test metrics from the evaluate stage, d2l's published figures beside them.", "",
        "## Results", "", *_comparison_table(summaries, evaluation),
        "## Per class (test set)", "", *_per_class_table(evaluation),
        "## Params", "", *_table(("param", "value"), params),
        "## Data", "", *_data_table(counts),
        "## Figures", "", *_figures_section(mistakes),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------- figures


def plot_image_grid(images: Sequence[Sequence[Image.Image | None]], titles: Sequence[Sequence[str]],
                    suptitle: str, fontsize: float = 9) -> Figure:
    """A grid of images, one list per row; None leaves a cell blank."""
    nrows, ncols = len(images), max(1, max((len(r) for r in images), default=0))
    fig = Figure(figsize=(1.8 * ncols, 1.9 * nrows + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, row in enumerate(axes):
        for j, ax in enumerate(row):
            ax.set_axis_off()
            image = images[i][j] if j < len(images[i]) else None
            if image is not None:
                ax.imshow(image)
                ax.set_title(titles[i][j], fontsize=fontsize)
    fig.suptitle(suptitle)
    return fig


def plot_samples(hotdogs: Sequence[Image.Image], others: Sequence[Image.Image]) -> Figure:
    """The seed's 2 × 8 grid of training images, one row per class."""
    titles = [[CLASSES[0]] * len(hotdogs), [CLASSES[1]] * len(others)]
    return plot_image_grid([list(hotdogs), list(others)], titles, "Training images")


def plot_misclassified(rows: Sequence[dict], images: Sequence[Image.Image], run: str) -> Figure:
    """A grid of a run's misclassified images captioned true → predicted (p_hotdog)."""
    captions = [f"{CLASSES[r['label']]} → {CLASSES[r['predicted']]} ({float(r['prob_hotdog']):.2f})"
                for r in rows]
    grid = [list(images[i:i + GRID_COLUMNS]) for i in range(0, len(images), GRID_COLUMNS)]
    titles = [captions[i:i + GRID_COLUMNS] for i in range(0, len(captions), GRID_COLUMNS)]
    return plot_image_grid(grid, titles, f"{RUN_TITLES[run]}: misclassified test images", fontsize=8)


def plot_curves(epochs: dict[str, Sequence[dict]]) -> Figure:
    """Loss, train accuracy and test accuracy per epoch, both runs in each panel."""
    fig = Figure(figsize=(13, 3.8), dpi=DPI, layout="constrained")
    panels = (("loss", "train loss"), ("train_acc", "train accuracy"), ("test_acc", "test accuracy"))
    for ax, (key, label) in zip(fig.subplots(1, 3), panels):
        for run in RUNS:
            xs = [row["epoch"] for row in epochs[run]]
            ax.plot(xs, [row[key] for row in epochs[run]], marker="o", label=RUN_TITLES[run])
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    return fig


def plot_confusion(evaluation: dict) -> Figure:
    """Both runs' test confusion matrices side by side, counts annotated."""
    fig = Figure(figsize=(9, 4.2), dpi=DPI, layout="constrained")
    for ax, run in zip(fig.subplots(1, len(RUNS)), RUNS):
        matrix = [[evaluation[run]["confusion"][a][p] for p in CLASSES] for a in CLASSES]
        ax.imshow(matrix, cmap="Blues", vmin=0)
        top = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                colour = "white" if count > top / 2 else "black"
                ax.text(j, i, f"{count:g}", ha="center", va="center", fontsize=14, color=colour)
        ticks = range(len(CLASSES))
        ax.set_xticks(ticks, CLASSES)
        ax.set_yticks(ticks, CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("actual")
        ax.set_title(f"{RUN_TITLES[run]} (accuracy {evaluation[run]['accuracy']:.3f})")
    fig.suptitle("Test confusion matrices")
    return fig


# ---------------------------------------------------------------- stage


def save_figure(fig: Figure, dest: Path) -> None:
    """Write a figure as PNG; no version metadata, so reruns give the same bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, format="png", dpi=DPI, metadata={"Software": None})


def write_figures(out: Path, paths: Paths, manifest_train: list[dict], epochs: dict,
                  evaluation: dict, predictions: list[dict]) -> None:
    """Render every figure into the report folder `out`."""
    hotdogs, others = select_samples(manifest_train)
    thumbs = [[load_thumbnail(paths.images / r["path"]) for r in rows] for rows in (hotdogs, others)]
    save_figure(plot_samples(*thumbs), out / FIG_SAMPLES)
    save_figure(plot_curves(epochs), out / FIG_CURVES)
    save_figure(plot_confusion(evaluation), out / FIG_CONFUSION)
    for run in RUNS:
        rows = select_misclassified(predictions, run)
        if rows:
            images = [load_thumbnail(paths.images / r["path"]) for r in rows]
            save_figure(plot_misclassified(rows, images, run), out / fig_misclassified(run))


def main() -> None:
    """Read every input, then write the report folder in one move."""
    params = load_params(*SECTIONS)
    paths = params.paths
    manifests = {s: read_manifest(paths.manifest_file(s)) for s in SPLITS}
    epochs, summaries = read_runs(paths)
    evaluation = read_evaluation(paths)
    predictions = read_predictions(paths)
    text = render_markdown(summaries, evaluation, class_counts(manifests), param_rows(params),
                           mistake_counts(predictions))
    with atomic_path(paths.reports) as tmp:
        write_figures(tmp, paths, manifests["train"], epochs, evaluation, predictions)
        (tmp / paths.report.relative_to(paths.reports)).write_text(text)
    print(f"report: wrote {paths.report} and {paths.figures}/")


if __name__ == "__main__":
    run_main("report", main)
