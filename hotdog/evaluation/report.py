"""The report: report.md and its PNG figures, from the manifests, both runs' metrics,
evaluate.json and the predictions (read and checked by hotdog.evaluation.results)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

from matplotlib.figure import Figure  # without pyplot: Agg canvas, no global state
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from hotdog.core.names import CLASSES, RUNS, SPLITS
from hotdog.core.paths import Paths
from hotdog.evaluation.results import (
    COMPARISON_HEADER,
    PRODUCERS,
    RUN_TITLES,
    comparison_rows,
    malformed,
    missing,
    read_evaluation,
    read_manifest,
    read_predictions,
    read_runs,
)

SAMPLES_PER_CLASS = 8
MAX_MISCLASSIFIED = 32
GRID_COLUMNS = 8
THUMBNAIL_PX = 160
DPI = 100
# Links in report.md, relative to it; the files are in paths.figures.
FIG_SAMPLES = "figures/samples.png"
FIG_CURVES = "figures/curves.png"
FIG_CONFUSION = "figures/confusion.png"


def fig_misclassified(run: str) -> str:
    """Report-relative path of a run's misclassified-images figure."""
    return f"figures/misclassified_{run}.png"


class Inputs(NamedTuple):
    """Everything the report shows, read and checked."""

    manifests: dict[str, list[dict]]  # split -> rows (path, label, class_name)
    epochs: dict[str, list[dict]]  # run -> per-epoch records
    summaries: dict[str, dict]  # run -> metrics/<run>.json
    evaluation: dict
    predictions: list[dict]


def read_inputs(paths: Paths) -> Inputs:
    """Every input of the report, checked; a missing or malformed one is a StageError."""
    manifests = {s: read_manifest(paths.manifest_file(s)) for s in SPLITS}
    epochs, summaries = read_runs(paths)
    return Inputs(manifests, epochs, summaries, read_evaluation(paths), read_predictions(paths))


def load_thumbnail(path: Path, size: int = THUMBNAIL_PX) -> Image.Image:
    """An image as RGB, shrunk to fit `size` pixels (grey, palette and CMYK files exist)."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise missing(path, PRODUCERS["images"]) from None
    except (UnidentifiedImageError, OSError) as err:
        raise malformed(path, PRODUCERS["images"], f"cannot decode: {err}") from None
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


def param_rows(seed: int, sections: dict[str, BaseModel]) -> list[tuple[str, str]]:
    """(dotted key, value) for the seed and each params section, in the order given."""
    rows = [("seed", str(seed))]
    for section, values in sections.items():
        for key, value in values.model_dump().items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            rows.append((f"{section}.{key}", text))
    return rows


# ---------------------------------------------------------------- markdown


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


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


# ---------------------------------------------------------------- writing


def save_figure(fig: Figure, dest: Path) -> None:
    """Write a figure as PNG; no version metadata, so reruns give the same bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, format="png", dpi=DPI, metadata={"Software": None})


def write_figures(folder: Path, images: Path, inputs: Inputs) -> None:
    """Render every figure into `folder` (the report's figures/); `images` is the image folder."""
    def save(fig: Figure, link: str) -> None:
        save_figure(fig, folder / Path(link).name)

    hotdogs, others = select_samples(inputs.manifests["train"])
    thumbs = [[load_thumbnail(images / r["path"]) for r in rows] for rows in (hotdogs, others)]
    save(plot_samples(*thumbs), FIG_SAMPLES)
    save(plot_curves(inputs.epochs), FIG_CURVES)
    save(plot_confusion(inputs.evaluation), FIG_CONFUSION)
    for run in RUNS:
        rows = select_misclassified(inputs.predictions, run)
        if rows:
            thumbnails = [load_thumbnail(images / r["path"]) for r in rows]
            save(plot_misclassified(rows, thumbnails, run), fig_misclassified(run))


def report_text(inputs: Inputs, params: list[tuple[str, str]]) -> str:
    """The report's markdown; its figures are linked as figures/<name>.png beside it."""
    return render_markdown(inputs.summaries, inputs.evaluation, class_counts(inputs.manifests), params,
                           mistake_counts(inputs.predictions))
