"""The report: report.md and its PNG figures, for any number of classes, from the manifests,
both runs' metrics, evaluate.json and the predictions (read and checked by
hotdog.evaluation.results)."""

from __future__ import annotations

import os
import textwrap
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from matplotlib.figure import Figure  # without pyplot: Agg canvas, no global state
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from hotdog.core.markdown import table
from hotdog.core.names import RUNS, SPLITS
from hotdog.core.paths import Paths
from hotdog.data.layout import class_list
from hotdog.data.upright import upright
from hotdog.evaluation.calibration import ECE_BINS, calibration_bins
from hotdog.evaluation.results import (
    PRODUCERS,
    RUN_TITLES,
    TOP5,
    comparison_header,
    comparison_rows,
    evaluated_classes,
    malformed,
    missing,
    read_evaluation,
    read_manifest,
    read_predictions,
    read_runs,
    stale_classes,
)

SAMPLES_PER_CLASS = 8
SAMPLE_CLASSES = 10  # the sample grid shows this many classes at most, one row each
MAX_MISCLASSIFIED = 32
GRID_COLUMNS = 8
THUMBNAIL_PX = 160
DPI = 100
ANNOTATE_UP_TO = 12  # heat-map cells carry their share up to this many classes; past it, colour alone
NAME_CHARS = 20  # class names on axes and captions are cut to this many characters
# Links in report.md, relative to it; the files are in paths.figures.
FIG_SAMPLES = "figures/samples.png"
FIG_CURVES = "figures/curves.png"
FIG_CONFUSION = "figures/confusion.png"
FIG_RECALL = "figures/recall.png"
FIG_RELIABILITY = "figures/reliability.png"


def fig_misclassified(run: str) -> str:
    """Report-relative path of a run's most-confident-mistakes figure."""
    return f"figures/misclassified_{run}.png"


class Inputs(NamedTuple):
    """Everything the report shows, read and checked."""

    classes: tuple[str, ...]  # label order, as every input records it
    manifests: dict[str, list[dict]]  # split -> rows (path, label, class_name)
    epochs: dict[str, list[dict]]  # run -> per-epoch records
    summaries: dict[str, dict]  # run -> metrics/<run>.json
    evaluation: dict
    predictions: list[dict]  # rows of results.PREDICTION_COLUMNS


def read_inputs(paths: Paths) -> Inputs:
    """Every input of the report, checked, recording the same classes; a missing, malformed
    or stale one is a StageError."""
    train, test = (read_manifest(paths.manifest_file(s)) for s in SPLITS)
    classes = train.classes
    if test.classes != classes:
        raise stale_classes(paths.manifest_file(SPLITS[1]), PRODUCERS["manifest"], test.classes,
                            paths.manifest_file(SPLITS[0]), classes)
    epochs, summaries = read_runs(paths)
    evaluation = read_evaluation(paths)
    if evaluated_classes(evaluation) != classes:
        raise stale_classes(paths.evaluation, PRODUCERS["evaluate"], evaluated_classes(evaluation),
                            paths.manifest_file(SPLITS[1]), classes)
    predictions = read_predictions(paths)
    if predictions.classes != classes:
        raise stale_classes(paths.predictions, PRODUCERS["evaluate"], predictions.classes,
                            paths.manifest_file(SPLITS[1]), classes)
    manifests = dict(zip(SPLITS, (train.rows, test.rows)))
    return Inputs(classes, manifests, epochs, summaries, evaluation, predictions.rows)


def load_thumbnail(path: Path, size: int = THUMBNAIL_PX) -> Image.Image:
    """An image as RGB, upright as decoding makes it, shrunk to fit `size` pixels (grey,
    palette and CMYK files exist)."""
    try:
        with Image.open(path) as img:
            rgb = upright(img).convert("RGB")
    except FileNotFoundError:
        raise missing(path, PRODUCERS["images"]) from None
    except (UnidentifiedImageError, OSError) as err:
        raise malformed(path, PRODUCERS["images"], f"cannot decode: {err}") from None
    rgb.thumbnail((size, size))
    return rgb


# ---------------------------------------------------------------- pure selection


def select_samples(manifest: Sequence[dict], classes: Sequence[str], n: int = SAMPLES_PER_CLASS,
                   max_classes: int = SAMPLE_CLASSES) -> list[list[dict]]:
    """The first n rows of each of the first `max_classes` classes, one list per class."""
    rows: list[list[dict]] = [[] for _ in classes[:max_classes]]
    for r in manifest:
        if r["label"] < len(rows) and len(rows[r["label"]]) < n:
            rows[r["label"]].append(r)
    return rows


def samples_note(classes: Sequence[str], max_classes: int = SAMPLE_CLASSES) -> str | None:
    """What the sample grid leaves out, past `max_classes` classes; None when it shows them all."""
    if len(classes) <= max_classes:
        return None
    rest = classes[max_classes:]
    return (f"the first {max_classes} of {len(classes)} classes; {len(rest)} more not shown "
            f"({class_list(rest, 4)})")


def short(name: str, chars: int = NAME_CHARS) -> str:
    """A class name cut to fit an axis label or a caption."""
    return name if len(name) <= chars else name[:chars - 1] + "…"


def mistake_caption(row: dict) -> str:
    """true → predicted (confidence), by class name."""
    return f"{short(row['true_class'])} → {short(row['predicted_class'])} ({row['confidence']:.2f})"


def select_misclassified(predictions: Sequence[dict], run: str, limit: int = MAX_MISCLASSIFIED) -> list[dict]:
    """A run's wrong predictions, most confident first, ties by path, at most `limit`."""
    wrong = [r for r in predictions if r["model"] == run and r["predicted"] != r["label"]]
    wrong.sort(key=lambda r: (-r["confidence"], r["path"]))
    return wrong[:limit]


def mistake_counts(predictions: Sequence[dict], limit: int = MAX_MISCLASSIFIED) -> dict[str, dict]:
    """Per run: images, how many were misclassified, and how many the figure shows."""
    counts = {}
    for run in RUNS:
        rows = [r for r in predictions if r["model"] == run]
        wrong = sum(r["predicted"] != r["label"] for r in rows)
        counts[run] = {"images": len(rows), "wrong": wrong, "shown": min(wrong, limit)}
    return counts


def class_counts(manifests: dict[str, Sequence[dict]], classes: Sequence[str]) -> dict[str, dict[str, int]]:
    """Images per split and class name, classes in label order."""
    counts = {split: dict.fromkeys(classes, 0) for split in manifests}
    for split, rows in manifests.items():
        for r in rows:
            counts[split][classes[r["label"]]] += 1
    return counts


def normalised_confusion(confusion: dict[str, dict[str, float]], classes: Sequence[str]) -> list[list[float]]:
    """Each true class's row as shares of its images; NaN for a class the test split lacks."""
    matrix = []
    for a in classes:
        total = sum(confusion[a][p] for p in classes)
        matrix.append([confusion[a][p] / total if total else float("nan") for p in classes])
    return matrix


def reliability(predictions: Sequence[dict], bins: int = ECE_BINS) -> dict[str, list[dict]]:
    """Each run's calibration bins over its test predictions."""
    out = {}
    for run in RUNS:
        rows = [r for r in predictions if r["model"] == run]
        out[run] = calibration_bins([float(r["confidence"]) for r in rows],
                                    [r["predicted"] == r["label"] for r in rows], bins)
    return out


def param_rows(keys: dict[str, Any], sections: dict[str, BaseModel]) -> list[tuple[str, str]]:
    """(dotted key, value) for single keys (the seed, data.url, data.sha1), then each params section's, in the
    order given."""
    items = list(keys.items())
    items += [(f"{section}.{key}", value) for section, values in sections.items()
              for key, value in values.model_dump().items()]
    return [(key, yaml_text(value)) for key, value in items]


def yaml_text(value: Any) -> str:
    """A param's value as params.yaml spells it: null, true, false; others as str() has them."""
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


# ---------------------------------------------------------------- markdown


def _results_notes(evaluation: dict, d2l: bool) -> list[str]:
    classes = evaluated_classes(evaluation)
    auc = (f"ROC-AUC is of the probability of {classes[0]}, for {classes[0]} against {classes[1]}"
           if len(classes) == 2 else "ROC-AUC is the mean one-vs-rest AUC over the classes")
    top5 = "; top-5: the true class among the five most probable" if TOP5 in evaluation[RUNS[0]] else ""
    published = ("d2l's rows are its published figures, measured on two GPUs with nn.DataParallel: only the "
                 "accuracies compare." if d2l else
                 "d2l's published figures are for its hotdog.zip, which data.sha1 does not name, so they are "
                 "not shown.")
    return [f"Majority baseline: the accuracy of always answering the test split's largest class. Balanced "
            f"accuracy: the mean recall over the classes. {auc}. ECE: expected calibration error over "
            f"{ECE_BINS} equal-width confidence bins{top5}.", "", published, ""]


def _results_section(summaries: dict, evaluation: dict, d2l: bool) -> list[str]:
    rows = table(comparison_header(evaluation), comparison_rows(summaries, evaluation, d2l))
    return [*rows, *_results_notes(evaluation, d2l)]


def _per_class_table(evaluation: dict) -> list[str]:
    header = ["class", "support"] + [f"{RUN_TITLES[run]} {m}" for run in RUNS for m in ("precision", "recall", "F1")]
    rows = []
    for cls in evaluated_classes(evaluation):
        scores = [evaluation[run]["per_class"][cls] for run in RUNS]
        rows.append((cls, int(scores[0]["support"]),
                     *(f"{s[m]:.3f}" for s in scores for m in ("precision", "recall", "f1"))))
    return table(header, rows)


def _data_table(counts: dict[str, dict[str, int]]) -> list[str]:
    splits = list(counts)
    rows = [(cls, *(counts[s][cls] for s in splits)) for cls in counts[splits[0]]]
    return table(("class", *splits), rows + [("total", *(sum(counts[s].values()) for s in splits))])


def _mistakes_lines(mistakes: dict[str, dict]) -> list[str]:
    lines = []
    for run in RUNS:
        c, title = mistakes[run], RUN_TITLES[run]
        if c["wrong"] == 0:
            lines += [f"{title}: no misclassified test images (of {c['images']}).", ""]
            continue
        shown = f"the {c['shown']} most confident" if c["shown"] < c["wrong"] else "most confident first"
        lines += [f"{title}: {c['wrong']} of {c['images']} test images misclassified; {shown}, captioned "
                  "true → predicted (confidence).", "",
                  f"![{title} misclassified]({fig_misclassified(run)})", ""]
    return lines


def _figures_section(classes: Sequence[str], mistakes: dict[str, dict]) -> list[str]:
    note = samples_note(classes)
    return [
        f"Training images: up to {SAMPLES_PER_CLASS} of each class, the first in the manifest's order"
        + (f"; {note}." if note else "."), "",
        f"![training samples]({FIG_SAMPLES})", "",
        "Per-epoch training loss, train accuracy and test accuracy.", "",
        f"![training curves]({FIG_CURVES})", "",
        "Confusion on the test set, each true class's row normalised to 1 (rows: true, columns: predicted).", "",
        f"![confusion matrices]({FIG_CONFUSION})", "",
        "Recall of each class on the test set; the dashed lines are the balanced accuracies.", "",
        f"![per-class recall]({FIG_RECALL})", "",
        f"Reliability: accuracy against confidence in {ECE_BINS} equal-width bins; a calibrated model "
        "follows the diagonal.", "",
        f"![reliability diagram]({FIG_RELIABILITY})", "",
        *_mistakes_lines(mistakes),
    ]


def _title(classes: Sequence[str], d2l: bool) -> list[str]:
    if d2l:
        return ["# Hotdog recognition: fine-tuning vs training from scratch", "",
                "ResNet-18 fine-tuned from ImageNet weights and trained from scratch on d2l's hotdog "
                "data set; test metrics from the evaluate stage, d2l's published figures beside them.", ""]
    return [f"# Image classification, {len(classes)} classes: fine-tuning vs training from scratch", "",
            f"ResNet-18 fine-tuned from ImageNet weights and trained from scratch on {len(classes)} classes "
            f"({class_list(classes, 10)}); test metrics from the evaluate stage.", ""]


def render_markdown(summaries: dict, evaluation: dict, counts: dict, params: list[tuple[str, str]],
                    mistakes: dict[str, dict], d2l: bool) -> str:
    """The whole report.md text from in-memory inputs; d2l's figures only when `d2l`."""
    classes = evaluated_classes(evaluation)
    lines = [
        *_title(classes, d2l),
        "## Results", "", *_results_section(summaries, evaluation, d2l),
        "## Per class (test set)", "", *_per_class_table(evaluation),
        "## Params", "", *table(("param", "value"), params),
        "## Data", "", *_data_table(counts),
        "## Figures", "", *_figures_section(classes, mistakes),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------- figures


def plot_image_grid(images: Sequence[Sequence[Image.Image | None]], titles: Sequence[Sequence[str]],
                    suptitle: str, fontsize: float = 9) -> Figure:
    """A grid of images, one list per row; None leaves a cell blank."""
    nrows, ncols = max(1, len(images)), max(1, max((len(r) for r in images), default=0))
    width = 1.8 * max(ncols, 4)  # room for the title above a short row
    fig = Figure(figsize=(width, 1.9 * nrows + 0.5), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, row in enumerate(axes):
        for j, ax in enumerate(row):
            ax.set_axis_off()
            image = images[i][j] if i < len(images) and j < len(images[i]) else None
            if image is not None:
                ax.imshow(image)
                ax.set_title(titles[i][j], fontsize=fontsize)
    fig.suptitle(textwrap.fill(suptitle, int(width * 9)))
    return fig


def plot_samples(rows: Sequence[Sequence[Image.Image]], classes: Sequence[str]) -> Figure:
    """Training images, one row per class shown, each titled with its class."""
    titles = [[short(cls)] * len(images) for cls, images in zip(classes, rows)]
    note = samples_note(classes, len(rows))
    return plot_image_grid([list(r) for r in rows], titles, "Training images" + (f": {note}" if note else ""))


def _wrapped(caption: str, chars: int = 26) -> str:
    """A caption on two lines when one would spill into the next cell."""
    return caption if len(caption) <= chars else caption.replace(" → ", " →\n", 1)


def plot_misclassified(rows: Sequence[dict], images: Sequence[Image.Image], run: str) -> Figure:
    """A grid of a run's misclassified images captioned true → predicted (confidence)."""
    captions = [_wrapped(mistake_caption(r)) for r in rows]
    grid = [list(images[i:i + GRID_COLUMNS]) for i in range(0, len(images), GRID_COLUMNS)]
    titles = [captions[i:i + GRID_COLUMNS] for i in range(0, len(captions), GRID_COLUMNS)]
    return plot_image_grid(grid, titles, f"{RUN_TITLES[run]}: the most confident mistakes on the test set",
                           fontsize=8)


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
        # Whole epochs, with room at each end: one epoch alone would span 0.96 to 1.04.
        ax.set_xlim(0.5, max(len(epochs[run]) for run in RUNS) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    return fig


def _class_ticks(ax, classes: Sequence[str], y: bool = False) -> None:
    """Class names on the x axis (rotated past three classes), and on y when asked."""
    ticks, names = range(len(classes)), [short(c) for c in classes]
    if len(classes) > 3:
        ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(ticks, names)
    if y:
        ax.set_yticks(ticks, names)


def _annotate(ax, matrix: list[list[float]]) -> None:
    n = len(matrix)
    size = 13 if n <= 3 else 10 if n <= 6 else 7
    for i, row in enumerate(matrix):
        for j, share in enumerate(row):
            if share == share:  # not NaN: a class the test split lacks stays blank
                ax.text(j, i, f"{share:.2f}", ha="center", va="center", fontsize=size,
                        color="white" if share > 0.5 else "black")


def plot_confusion(evaluation: dict) -> Figure:
    """Both runs' normalised test confusion as heat-maps side by side, rows summing to 1."""
    classes = evaluated_classes(evaluation)
    side = max(4.0, 0.42 * len(classes) + 2.0)
    fig = Figure(figsize=(2 * side + 1.2, side + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(RUNS), squeeze=False)[0]
    for ax, run in zip(axes, RUNS):
        matrix = normalised_confusion(evaluation[run]["confusion"], classes)
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
        if len(classes) <= ANNOTATE_UP_TO:
            _annotate(ax, matrix)
        _class_ticks(ax, classes, y=True)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{RUN_TITLES[run]} (accuracy {evaluation[run]['accuracy']:.3f})")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="share of the true class")
    fig.suptitle("Test confusion, normalised by true class")
    return fig


def plot_recall(evaluation: dict) -> Figure:
    """Each class's test recall, the runs' bars side by side, balanced accuracy dashed."""
    classes = evaluated_classes(evaluation)
    # The bars' width, and 3 inches for the legend beside them.
    fig = Figure(figsize=(max(4.0, 0.55 * len(classes) + 1.5) + 3.0, 4.2), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(RUNS)
    for k, run in enumerate(RUNS):
        m, colour = evaluation[run], f"C{k}"
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(classes))]
        ax.bar(xs, [m["per_class"][c]["recall"] for c in classes], width, color=colour, label=RUN_TITLES[run])
        ax.axhline(m["balanced_accuracy"], color=colour, linestyle="--", linewidth=1,
                   label=f"{RUN_TITLES[run]} balanced accuracy {m['balanced_accuracy']:.3f}")
    _class_ticks(ax, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("recall")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Per-class recall (test set)")
    return fig


def plot_reliability(bins: dict[str, list[dict]], evaluation: dict) -> Figure:
    """Accuracy against mean confidence per bin for both runs, the diagonal, and each bin's count."""
    fig = Figure(figsize=(6.5, 6.5), dpi=DPI, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="calibrated")
    width = 1 / (len(next(iter(bins.values()))) * (len(RUNS) + 1))
    for k, run in enumerate(RUNS):
        full = [b for b in bins[run] if b["count"]]
        top.plot([b["confidence"] for b in full], [b["accuracy"] for b in full], marker="o", color=f"C{k}",
                 label=f"{RUN_TITLES[run]} (ECE {evaluation[run]['ece']:.3f})")
        bottom.bar([b["lower"] + width * (k + 1) for b in bins[run]], [b["count"] for b in bins[run]],
                   width, color=f"C{k}")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    top.set_title("Reliability (test set)")
    bottom.set_xlabel("confidence (the predicted class's probability)")
    bottom.set_ylabel("images")
    return fig


# ---------------------------------------------------------------- writing


def save_figure(fig: Figure, dest: Path) -> None:
    """Write a figure as PNG; no version metadata, so reruns give the same bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(dest, format="png", dpi=DPI, metadata={"Software": None})


def figure_jobs(images: Path, inputs: Inputs) -> list[tuple[str, Callable[[], Figure]]]:
    """Every figure as (its link in report.md, what draws it); `images` is the image folder.
    Each one draws from its own inputs alone, so they can be drawn in any order, anywhere."""
    samples = select_samples(inputs.manifests["train"], inputs.classes)
    # The image grids take longest, so they come first: drawn side by side, they start first.
    jobs: list[tuple[str, Callable[[], Figure]]] = [(FIG_SAMPLES, partial(_draw_samples, images, samples,
                                                                          inputs.classes))]
    for run in RUNS:
        rows = select_misclassified(inputs.predictions, run)
        if rows:
            jobs.append((fig_misclassified(run), partial(_draw_misclassified, images, rows, run)))
    return jobs + [
        (FIG_CURVES, partial(plot_curves, inputs.epochs)),
        (FIG_CONFUSION, partial(plot_confusion, inputs.evaluation)),
        (FIG_RECALL, partial(plot_recall, inputs.evaluation)),
        (FIG_RELIABILITY, partial(plot_reliability, reliability(inputs.predictions), inputs.evaluation)),
    ]


def _draw_samples(images: Path, samples: Sequence[Sequence[dict]], classes: Sequence[str]) -> Figure:
    return plot_samples([[load_thumbnail(images / r["path"]) for r in rows] for rows in samples], classes)


def _draw_misclassified(images: Path, rows: Sequence[dict], run: str) -> Figure:
    return plot_misclassified(rows, [load_thumbnail(images / r["path"]) for r in rows], run)


def _draw_and_save(draw: Callable[[], Figure], dest: Path) -> None:
    save_figure(draw(), dest)


def write_figures(folder: Path, images: Path, inputs: Inputs, workers: int | None = None) -> None:
    """Render every figure into `folder` (the report's figures/); `images` is the image folder.

    Drawing is nearly all of the report stage's time (0.3 to 0.9 s a figure, in one thread, on
    a 2-core Xeon), so the figures are drawn side by side in up to `workers` processes (default:
    every core). Each is drawn from the same inputs as it would be alone, so the bytes are the
    same either way (tests/test_report.py compares them)."""
    jobs = [(draw, folder / Path(link).name) for link, draw in figure_jobs(images, inputs)]
    workers = min(len(jobs), workers or os.cpu_count() or 1)
    if workers <= 1:
        for draw, dest in jobs:
            _draw_and_save(draw, dest)
        return
    with ProcessPoolExecutor(workers) as pool:
        for done in [pool.submit(_draw_and_save, draw, dest) for draw, dest in jobs]:
            done.result()


def report_text(inputs: Inputs, params: list[tuple[str, str]], d2l: bool) -> str:
    """The report's markdown; its figures are linked as figures/<name>.png beside it. `d2l`:
    the data is d2l's hotdog.zip, so d2l's published figures stand beside ours."""
    return render_markdown(inputs.summaries, inputs.evaluation, class_counts(inputs.manifests, inputs.classes),
                           params, mistake_counts(inputs.predictions), d2l)
