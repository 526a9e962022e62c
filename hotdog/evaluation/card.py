"""The model card, reports/model_card.md: the data, the recipe, the test metrics with 95%
bootstrap intervals, the limits, how to reproduce the run and its intended use. It is built from
the report's checked inputs, metrics/manifest.json, params, dvc.lock, git and the installed
packages. Nothing in it comes from the clock or the machine's speed, so one run always gives the
same card. No torch here: the report stage loads none."""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from hotdog.core.errors import StageError
from hotdog.core.markdown import table
from hotdog.core.names import RUNS, SPLITS
from hotdog.core.overrides import set_param
from hotdog.core.params import RunParams, TrainParams, WeightsParams
from hotdog.core.paths import Paths
from hotdog.data.layout import FOLDERS, HELD_OUT, SPLIT, class_list
from hotdog.data.sizes import eval_resize
from hotdog.evaluation.calibration import ECE_BINS
from hotdog.evaluation.results import (
    PRODUCERS,
    RUN_TITLES,
    SEED_PUBLISHED,
    malformed,
    missing,
    stale_classes,
)

LOCK_FILE = Path("dvc.lock")  # DVC's record, beside dvc.yaml; read, never a dep (DVC rewrites it as it runs)
RESAMPLES = 1000
BOOTSTRAP_SEED = 0  # fixed, so the same predictions always give the same intervals
LEVEL = 0.95
TOP_CONFUSED = 3
# The packages whose versions shape the models and their inputs; read from their metadata,
# so the report stage still loads no torch.
PACKAGES = ("torch", "torchvision", "numpy", "pillow")
NONE = "—"


# ---------------------------------------------------------------- bootstrap


class Interval(NamedTuple):
    """A score on the test split, and its bootstrap interval (NaN where it is undefined)."""

    value: float
    low: float
    high: float


class Scores(NamedTuple):
    """One model's test scores with their intervals."""

    images: int
    accuracy: Interval
    balanced_accuracy: Interval
    recall: dict[str, Interval]  # class name -> recall, classes in label order


def _interval(values: np.ndarray, level: float) -> Interval:
    """values[0] is the split's own score, values[1:] the resamples'; NaN ones are left out."""
    drawn = values[1:][~np.isnan(values[1:])]
    if not drawn.size:
        return Interval(float(values[0]), math.nan, math.nan)
    low, high = np.percentile(drawn, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(values[0]), float(low), float(high))


def bootstrap_scores(labels: Sequence[int], predicted: Sequence[int], classes: Sequence[str],
                     resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = LEVEL) -> Scores:
    """Accuracy, balanced accuracy and each class's recall, each with its percentile interval
    over `resamples` resamples (with replacement) of the test images."""
    labels, predicted = np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    n, k = len(labels), len(classes)
    if not n:
        raise ValueError("no test predictions to score")
    # These scores depend only on how many images of each class are right and wrong, so a
    # resample of the n images is one multinomial draw of those 2k counts: the same
    # distribution, without an n-wide array per resample.
    cells = np.bincount(labels * 2 + (labels == predicted), minlength=2 * k)
    draws = np.random.default_rng(seed).multinomial(n, cells / n, size=resamples)
    counts = np.concatenate([cells[None], draws]).reshape(-1, k, 2)  # row 0: the split itself
    right, support = counts[..., 1], counts.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = right / support  # NaN for a class that a resample drew no image of
    balanced = np.nanmean(recall, axis=1)  # over the classes drawn; each resample draws some
    return Scores(n, _interval(right.sum(1) / n, level), _interval(balanced, level),
                  {cls: _interval(recall[:, i], level) for i, cls in enumerate(classes)})


def run_scores(predictions: Sequence[dict], classes: Sequence[str]) -> dict[str, Scores]:
    """Each run's bootstrapped scores from its rows of predictions.parquet."""
    out = {}
    for run in RUNS:
        rows = [r for r in predictions if r["model"] == run]
        out[run] = bootstrap_scores([r["label"] for r in rows], [r["predicted"] for r in rows], classes)
    return out


# ---------------------------------------------------------------- confusion


class Confused(NamedTuple):
    """Test images of one class taken for another."""

    true: str
    predicted: str
    count: int
    share: float  # of the true class's test images


def most_confused(confusion: dict[str, dict[str, float]], classes: Sequence[str],
                  top: int = TOP_CONFUSED) -> list[Confused]:
    """The `top` largest off-diagonal cells of a confusion matrix (true -> predicted counts),
    largest first, ties in label order."""
    cells = []
    for i, true in enumerate(classes):
        support = sum(confusion[true][p] for p in classes)
        for j, pred in enumerate(classes):
            if i != j and confusion[true][pred] > 0:
                cells.append((-confusion[true][pred], i, j, Confused(true, pred, int(confusion[true][pred]),
                                                                      confusion[true][pred] / support)))
    return [cell[-1] for cell in sorted(cells)[:top]]


# ---------------------------------------------------------------- provenance


def read_lock(path: Path = LOCK_FILE) -> dict[str, str] | None:
    """Every output dvc.lock records, as POSIX path -> md5 (a folder's ends in .dir); None when
    there is no dvc.lock (a stage run by hand)."""
    try:
        lock = YAML(typ="safe").load(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (YAMLError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StageError(f"{path} is not valid YAML ({first}); restore it (`git checkout {path}`) and run "
                         "`dvc repro`") from None
    stages = lock.get("stages") if isinstance(lock, dict) else None
    digests = {}
    for stage in (stages or {}).values():
        for out in (stage.get("outs") or []) if isinstance(stage, dict) else []:
            if isinstance(out, dict) and isinstance(out.get("path"), str) and isinstance(out.get("md5"), str):
                digests[Path(out["path"]).as_posix()] = out["md5"]
    return dict(sorted(digests.items()))


def recorded(digests: dict[str, str] | None, path: Path) -> str:
    """What dvc.lock records for an output, in words."""
    if digests is None:
        return "not recorded (no dvc.lock)"
    md5 = digests.get(Path(path).as_posix())
    return f"md5 `{md5}` (dvc.lock)" if md5 else "not recorded in dvc.lock"


class GitState(NamedTuple):
    """The commit the run came from, or why there is none, and what differed from it."""

    commit: str | None
    dirty: bool | None  # tracked files differ from it (outputs and DVC's records aside); None: unknown
    note: str  # why there is no commit, when there is none
    changed: tuple[str, ...] = ()  # those files, relative to the project
    # params.yaml's values that differ from the commit's: (dotted key, the commit's, this run's);
    # None when the two could not be compared (the commit's is not YAML)
    params: tuple[tuple[str, Any, Any], ...] | None = ()


def _git(project: Path, *args: str) -> subprocess.CompletedProcess | None:
    try:  # a list of args, never a shell
        # A file name that is not UTF-8 comes out raw (core.quotePath=false): replaced, not fatal.
        return subprocess.run(["git", *args], cwd=project, capture_output=True, encoding="utf-8", errors="replace",
                              timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None


def git_state(project: Path, outputs: Sequence[Path | str] = ()) -> GitState:
    """HEAD of the repository holding `project`, and which of its tracked files under
    `project` differ from it, leaving out `outputs`, dvc.lock and .gitignore files: a running
    `dvc repro` rewrites those, so they say nothing about the code and params that ran. For
    params.yaml, the values that differ."""
    found = _git(project, "rev-parse", "--git-dir")
    if found is None:
        return GitState(None, None, "git could not be run")
    if found.returncode:
        return GitState(None, None, "not a git repository")
    head = _git(project, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    if head is None or head.returncode:
        return GitState(None, None, "a git repository with no commit yet")
    commit = head.stdout.strip()
    leave_out = [f":(exclude){Path(p).as_posix()}" for p in (LOCK_FILE, *outputs)] + [":(exclude,glob)**/.gitignore"]
    # --no-optional-locks: only look; a stage must not touch the index.
    # core.quotePath=false: a name outside ASCII as it is, not "gr\303\274ne.py".
    diff = _git(project, "-c", "core.quotePath=false", "--no-optional-locks", "diff", "--name-only", "--relative",
                "HEAD", "--", ".", *leave_out)
    if diff is None or diff.returncode:
        return GitState(commit, None, "")
    changed = tuple(diff.stdout.splitlines())
    params = _params_changes(project) if PARAMS_NAME in changed else ()
    return GitState(commit, bool(changed), "", changed, params)


PARAMS_NAME = "params.yaml"


def _params_changes(project: Path) -> tuple[tuple[str, Any, Any], ...] | None:
    """(key, the commit's value, the file's) for each params.yaml value that differs; None
    when they cannot be compared."""
    committed = _git(project, "show", f"HEAD:./{PARAMS_NAME}")
    try:
        old = _flat(YAML(typ="safe", pure=True).load(committed.stdout)) if committed and not committed.returncode else {}
        new = _flat(YAML(typ="safe", pure=True).load((project / PARAMS_NAME).read_text()))
    except (OSError, YAMLError):
        return None
    return tuple((k, old.get(k, ABSENT), new.get(k, ABSENT)) for k in sorted(old.keys() | new.keys())
                 if old.get(k, ABSENT) != new.get(k, ABSENT))


class _Absent:
    """A key one side of a params change lacks."""

    def __repr__(self) -> str:
        return "absent"


ABSENT = _Absent()


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """A params mapping as dotted keys: {"train": {"epochs": 5}} -> {"train.epochs": 5}."""
    if not isinstance(node, dict):
        return {prefix: node} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return {k.removesuffix("."): v for k, v in out.items()}


def environment() -> dict[str, str]:
    """Python, the platform and PACKAGES' versions (from their metadata: nothing is imported).
    No host name, path or date, so the same machine always gives the same answer."""
    env = {"python": platform.python_version(), "platform": f"{platform.system()} {platform.machine()}"}
    for name in PACKAGES:
        try:
            env[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            env[name] = "not installed"
    return env


# ---------------------------------------------------------------- metrics/manifest.json


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _split_summary_problem(summary: Any) -> str | None:
    """The first problem with manifest.json's fields the card reads, as a phrase; None when fine."""
    if not isinstance(summary, dict):
        return "top level: expected an object"
    classes = summary.get("classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        return f"classes: expected a list of names, got {classes!r}"
    if summary.get("layout") not in (SPLIT, FOLDERS):
        return f"layout: expected {SPLIT!r} or {FOLDERS!r}, got {summary.get('layout')!r}"
    duplicates = summary.get("duplicates")
    for key in ("copies", "left_out_of_train"):
        if not isinstance(duplicates, dict) or not _is_count(duplicates.get(key)):
            return f"duplicates.{key}: expected a count"
    for split in SPLITS:
        counts = summary.get(split)
        for key in ("images", "rejected"):
            if not isinstance(counts, dict) or not _is_count(counts.get(key)):
                return f"{split}.{key}: expected a count"
        per_class = counts.get("per_class")
        for cls in classes:
            if not isinstance(per_class, dict) or not _is_count(per_class.get(cls)):
                return f"{split}.per_class.{cls}: expected a count"
    return None


def read_split_summary(paths: Paths, classes: Sequence[str]) -> dict:
    """metrics/manifest.json, checked, and recording `classes` (the test manifest's)."""
    path, stage = paths.manifest_summary, PRODUCERS["manifest"]
    try:
        summary = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise missing(path, stage) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise malformed(path, stage, f"not valid JSON: {err}") from None
    problem = _split_summary_problem(summary)
    if problem:
        raise malformed(path, stage, problem)
    if tuple(summary["classes"]) != tuple(classes):
        raise stale_classes(path, stage, summary["classes"], paths.manifest_file(SPLITS[1]), classes)
    return summary


# ---------------------------------------------------------------- the card's inputs


class Recipe(NamedTuple):
    """The params the card states."""

    seed: int
    data_url: str
    data_sha1: str | None
    weights: WeightsParams
    train: TrainParams
    runs: dict[str, RunParams]  # run -> its section (finetune, scratch)


class Evidence(NamedTuple):
    """What the card reports, read and checked."""

    classes: tuple[str, ...]  # label order
    split: dict  # metrics/manifest.json
    summaries: dict[str, dict]  # run -> metrics/<run>.json
    evaluation: dict  # evaluate.json
    predictions: list[dict]  # rows of results.PREDICTION_COLUMNS
    digests: dict[str, str] | None  # dvc.lock's outputs; None without a dvc.lock
    git: GitState
    environment: dict[str, str]


def gather_evidence(paths: Paths, classes: tuple[str, ...], summaries: dict[str, dict], evaluation: dict,
                    predictions: list[dict], outputs: Sequence[Path], project: Path = Path(".")) -> Evidence:
    """The card's evidence: the report's checked inputs (classes to predictions), and
    metrics/manifest.json, dvc.lock, git and the environment read here. `outputs`: what the
    caller writes, which git's check leaves out with every output dvc.lock records."""
    lock = read_lock(project / LOCK_FILE)
    return Evidence(classes, read_split_summary(paths, classes), summaries, evaluation, predictions, lock,
                    git_state(project, [*(lock or {}), *outputs]), environment())


# ---------------------------------------------------------------- markdown


def _num(value: float, digits: int = 3) -> str:
    return NONE if value is None or math.isnan(value) else f"{value:.{digits}f}"


def interval_text(iv: Interval) -> str:
    """0.875 (0.812–0.931); the interval left out where it is undefined."""
    if math.isnan(iv.low):
        return _num(iv.value)
    return f"{_num(iv.value)} ({_num(iv.low)}–{_num(iv.high)})"


def _title(classes: Sequence[str], d2l: bool) -> list[str]:
    if d2l:
        return ["# Model card: hotdog recognition, ResNet-18 fine-tuned and from scratch", ""]
    return [f"# Model card: image classification, {len(classes)} classes, ResNet-18 fine-tuned and from scratch",
            ""]


def _summary(classes: Sequence[str], paths: Paths) -> list[str]:
    return [f"Two image classifiers for the classes {class_list(classes, 10)}, as in d2l's \"Fine-Tuning\" "
            f"chapter: a ResNet-18 fine-tuned from ImageNet weights (`{paths.checkpoint(RUNS[0]).as_posix()}`) and "
            f"the same network trained from scratch (`{paths.checkpoint(RUNS[1]).as_posix()}`). The report stage "
            f"writes this card; `{paths.report.name}` beside it has the figures.", ""]


def _intended_use(classes: Sequence[str]) -> list[str]:
    return ["## Intended use", "",
            f"Teaching and benchmarking: to show what fine-tuning gains over training from scratch on a small "
            f"data set, and as a baseline to compare other recipes with. The models sort a photo into one of "
            f"{len(classes)} classes ({class_list(classes, 10)}); they have no \"none of these\", so a photo of "
            f"anything else still gets one of them, often with high confidence. Use them only on photos like "
            f"the training images, and check them on your own photos first. They are not for decisions about "
            f"people, health, safety or money.", ""]


def _gathered(recipe: Recipe, d2l: bool) -> str:
    if d2l:
        return ("d2l's hotdog data set: its chapter says the images were gathered online, 1,400 of hotdogs and "
                "as many of other foods, 1,000 of each class for training and the rest for testing; they vary in "
                "size and aspect ratio. Who took them, and how they were chosen, is not recorded.")
    return (f"the images come from data.url (`{recipe.data_url}`), a folder or zip supplied by the user. "
            "This card cannot know how they were gathered, by whom, or what they leave out; add that here "
            "before sharing the model.")


def _data_section(recipe: Recipe, evidence: Evidence, paths: Paths) -> list[str]:
    split, classes = evidence.split, evidence.classes
    digest = (f"SHA-1 `{recipe.data_sha1}` (data.sha1, checked when downloaded)" if recipe.data_sha1 else
              "none in params (data.sha1 is null: a folder, which the download stage packs into a zip)")
    # The download stage unpacks val/, valid/ or validation/ as test/ when test/ is absent, and
    # says which in its log; nothing after it records which, so the card names them all.
    stand_ins = ", ".join(f"{name}/" for name in HELD_OUT[1:-1]) + f" or {HELD_OUT[-1]}/"
    how = (f"the data set's own folders: train/ for training, and {HELD_OUT[0]}/ (or, where there is none, "
           f"{stand_ins}) for testing" if split["layout"] == SPLIT else
           f"made by the pipeline: an image is in test when its SHA-1, read as a number in [0, 1), is below "
           f"{split['test_fraction']:g} (data.test_fraction), so each class is {split['test_fraction'] * 100:g}% "
           "test in expectation; the shares drawn are in the table below")
    rejected = " and ".join(f"{split[s]['rejected']} of {s}" for s in SPLITS)
    lines = ["## Data", "",
             f"- Source: `{recipe.data_url}` (data.url).",
             f"- Digest: {digest}. As DVC recorded them: `{paths.zip.as_posix()}` "
             f"{recorded(evidence.digests, paths.zip)}, `{paths.images.as_posix()}` "
             f"{recorded(evidence.digests, paths.images)}.",
             f"- Classes ({len(classes)}, in label order): {', '.join(classes)}.",
             f"- Split: {how}.",
             f"- Left out: unreadable images ({rejected}), listed in `{paths.rejects.as_posix()}`."]
    dup = split["duplicates"]
    if dup["copies"]:
        copies = "1 image is an extra copy" if dup["copies"] == 1 else f"{dup['copies']} images are extra copies"
        lines.append(f"- Duplicates: {copies} of another (the same SHA-1); the {dup['left_out_of_train']} in train "
                     "whose copy is in test were left out of train.")
    totals = {s: split[s]["images"] for s in SPLITS}

    def in_test(counts: dict[str, int]) -> str:
        return f"{counts[SPLITS[1]] / max(sum(counts.values()), 1):.0%}"

    rows = [(cls, *(f"{split[s]['per_class'][cls]} ({split[s]['per_class'][cls] / max(totals[s], 1):.1%})"
                    for s in SPLITS), in_test({s: split[s]["per_class"][cls] for s in SPLITS})) for cls in classes]
    return [*lines, "", "Images per class (share of the split), and the share of each class in test:", "",
            *table(("class", *SPLITS, "in test"), [*rows, ("total", *(totals[s] for s in SPLITS), in_test(totals))])]


def _lr_text(params: RunParams) -> tuple[str, str]:
    head = params.lr * params.head_lr_mult
    body = "— (frozen)" if params.freeze_body else f"{params.lr:g}"
    return body, f"{head:g}" + ("" if params.head_lr_mult == 1 else f" ({params.head_lr_mult:g} × body's)")


def _recipe_section(recipe: Recipe, evidence: Evidence, paths: Paths) -> list[str]:
    runs, s, w = recipe.runs, recipe.train, recipe.weights
    resize = eval_resize(s.image_size)
    rows = [
        ("starts from", *("ImageNet weights" if runs[r].pretrained else "random initialisation" for r in RUNS)),
        ("output layer", *(f"new, {runs[r].head_init} init" for r in RUNS)),
        ("body", *("frozen" if runs[r].freeze_body else "trained" for r in RUNS)),
        ("learning rate, body", *(_lr_text(runs[r])[0] for r in RUNS)),
        ("learning rate, output layer", *(_lr_text(runs[r])[1] for r in RUNS)),
        ("trained on (device, precision)", *(f"{evidence.summaries[r]['device']}, "
                                             f"{evidence.summaries[r]['precision']}" for r in RUNS)),
        ("evaluated on (device, precision)", *(f"{evidence.evaluation[r]['device']}, "
                                               f"{evidence.evaluation[r]['precision']}" for r in RUNS)),
    ]
    prefix = "" if len(w.sha256) == 64 else ", a prefix"
    epochs = f"{s.epochs} epoch" + ("" if s.epochs == 1 else "s")
    return ["## Recipe", "", *table(("", *(RUN_TITLES[r] for r in RUNS)), rows),
            f"Both: ResNet-18 with a {len(evidence.classes)}-way output layer, {epochs} of SGD on the loss "
            f"summed over each batch of {s.batch_size} images (as d2l), weight decay {s.weight_decay:g}, seed "
            f"{recipe.seed}. Training images are random crops (random scale and aspect ratio) resized to "
            f"{s.image_size} × {s.image_size} px, flipped at random; test images have their shorter side resized to "
            f"{resize} px, are squashed to {resize} × {resize} (as d2l's test transform) and centre-cropped to "
            f"{s.image_size} × {s.image_size} px. train.device is {s.device} and train.precision {s.precision} "
            "(auto picks by machine; the table says what ran).", "",
            f"Base weights: `{w.url}` (weights.url), SHA-256 `{w.sha256}` (weights.sha256{prefix}, checked when "
            f"downloaded); `{paths.weights.as_posix()}` {recorded(evidence.digests, paths.weights)}.", ""]


def _majority(evaluation: dict, classes: Sequence[str]) -> str:
    """The test split's largest class, the first in label order on a tie."""
    support = evaluation[RUNS[0]]["per_class"]
    return max(classes, key=lambda c: support[c]["support"])


def _metrics_section(scores: dict[str, Scores], evidence: Evidence, d2l: bool) -> list[str]:
    classes, evaluation = evidence.classes, evidence.evaluation
    majority = _majority(evaluation, classes)
    published = [SEED_PUBLISHED[r]["test_acc"] for r in RUNS] if d2l else []
    header = ("metric", *(RUN_TITLES[r] for r in RUNS), "majority baseline",
              *(f"d2l {RUN_TITLES[r]}" for r in RUNS if d2l))
    rest = (NONE,) * len(published)
    rows = [("accuracy", *(interval_text(scores[r].accuracy) for r in RUNS),
             _num(evaluation[RUNS[0]]["majority_accuracy"]), *(_num(v) for v in published)),
            ("balanced accuracy", *(interval_text(scores[r].balanced_accuracy) for r in RUNS),
             _num(1 / len(classes)), *rest)]
    rows += [(f"recall: {cls}", *(interval_text(scores[r].recall[cls]) for r in RUNS),
              _num(float(cls == majority)), *rest) for cls in classes]
    d2l_note = ("d2l's columns: the test accuracies its chapter published for the same data, measured on two "
                "GPUs." if d2l else
                "d2l's published figures are for its hotdog.zip, which data.sha1 does not name, so they are not "
                "shown.")
    return [f"## Metrics (test split, {scores[RUNS[0]].images} images)", "", *table(header, rows),
            f"In brackets: the {LEVEL:.0%} bootstrap interval, the {50 * (1 - LEVEL):g}th and "
            f"{50 * (1 + LEVEL):g}th percentiles over {RESAMPLES} resamples of the test images (with replacement, "
            f"seed {BOOTSTRAP_SEED}). It shows how much a figure depends on which images the test split happens "
            "to hold; it does not cover another training seed, other hardware, or photos unlike these. Balanced "
            f"accuracy: the mean recall over the classes. Majority baseline: always answering {majority}, the "
            f"test split's largest class. {d2l_note}", ""]


def _confused_lines(evaluation: dict, classes: Sequence[str]) -> list[str]:
    lines = []
    for run in RUNS:
        pairs = most_confused(evaluation[run]["confusion"], classes)
        said = "; ".join(f"{c.true} → {c.predicted}: {c.count} ({c.share:.1%} of {c.true})" for c in pairs)
        lines.append(f"  - {RUN_TITLES[run]}: {said or 'no test image misclassified'}.")
    return lines


def _limits_section(scores: dict[str, Scores], evidence: Evidence, recipe: Recipe, d2l: bool) -> list[str]:
    evaluation, classes = evidence.evaluation, evidence.classes
    ece = " and ".join(f"{_num(evaluation[r]['ece'])} ({RUN_TITLES[r]})" for r in RUNS)
    rarest = min(evidence.split[SPLITS[1]]["per_class"].values())
    return ["## Limits", "",
            f"- Calibration: the expected calibration error (ECE, {ECE_BINS} equal-width confidence bins) is "
            f"{ece}: the mean gap between the confidence a model gives and how often it is right at that "
            "confidence. Read a confidence as a score, not a probability; `report.md` has the reliability diagram.",
            f"- The classes most confused on the test split (true → predicted: images, share of the true class), "
            f"at most {TOP_CONFUSED} per model:",
            *_confused_lines(evaluation, classes),
            f"- A small test split: {scores[RUNS[0]].images} images, {rarest} of the rarest class; the intervals "
            "above are wide where it is small.",
            f"- How the images were gathered: {_gathered(recipe, d2l)}", ""]


def _scalar(value: Any) -> str:
    """A params value as params.yaml writes it: null, true, 0.001, [a, b]."""
    if value is None:
        return "null"
    if value is ABSENT:
        return "(absent)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return str(value)


def _changes_text(git: GitState) -> str:
    """The uncommitted changes, named: files, and params.yaml's values (at most MAX_NAMED of each)."""
    named = []
    for name in git.changed[:MAX_NAMED]:
        if name == PARAMS_NAME and git.params is None:
            named.append(f"`{name}` (its values could not be compared with the commit's)")
        elif name == PARAMS_NAME:
            values = "; ".join(f"`{k}` {_scalar(old)} → {_scalar(new)}" for k, old, new in git.params[:MAX_NAMED])
            more = f"; and {len(git.params) - MAX_NAMED} more" if len(git.params) > MAX_NAMED else ""
            named.append(f"`{name}` ({values or 'no value changed'}{more})")
        else:
            named.append(f"`{name}`")
    more = f", and {len(git.changed) - MAX_NAMED} more file(s)" if len(git.changed) > MAX_NAMED else ""
    return ", ".join(named) + more


MAX_NAMED = 6


def _shell_word(text: str) -> str:
    """`text` as one word for a POSIX shell, quoted only as much as it needs to be."""
    if re.fullmatch(r"[\w.=,:/+@%-]+", text):
        return text
    if not any(c in text for c in '"$`\\!'):
        return f'"{text}"'
    return shlex.quote(text)


def _reproduce_section(git: GitState, env: dict[str, str], data_url: str, folder: bool) -> list[str]:
    run, caveat = ["dvc repro"], []
    if git.commit is None:
        said = f"- Commit: not recorded ({git.note})."
    elif git.dirty is None:
        said = f"- Commit: `{git.commit}`; whether tracked files differed from it could not be checked."
    elif not git.dirty:
        said = (f"- Commit: `{git.commit}`. Uncommitted changes to tracked files (the pipeline's outputs, dvc.lock "
                "and .gitignore files aside): none.")
    else:
        said = (f"- Commit: `{git.commit}`, and this run had uncommitted changes to tracked files (the pipeline's "
                f"outputs, dvc.lock and .gitignore files aside): {_changes_text(git)}. To have this card name a "
                "commit that holds them, commit them, then `dvc repro --force --single-item report` writes it again "
                "(`dvc repro` alone re-runs nothing, as nothing it uses changed).")
        values_only = (git.changed == (PARAMS_NAME,) and git.params is not None
                       and all(ABSENT not in pair for _, *pair in git.params))
        if values_only and git.params:
            # The changes are values alone: the commands below set them, so they give this run.
            run = ["dvc exp run " + " ".join(f"-S {_shell_word(set_param(k, new))}" for k, _, new in git.params)]
        elif not values_only:
            caveat = ["The commit alone does not give this run: it ran with the changes above.", ""]
    commit = git.commit or "<commit>"
    packages = ", ".join(f"{name} {env[name]}" for name in PACKAGES if name in env)
    fetched = (f"packs the photos in `{data_url}` (data.url) again, which must hold the same ones on that machine, "
               "and downloads the weights again and checks their digest" if folder else
               "downloads the data and the weights again and checks their digests")
    return ["## How to reproduce", "", said, "",
            "```sh", "git clone <this repository> hotdog && cd hotdog", f"git checkout {commit}", *run, "```", "",
            *caveat,
            f"`{run[0].split(' -S')[0]}` {fetched}, then trains both models with the same seed and writes this card "
            "again. Training is seeded and asks for deterministic kernels; another device, precision or package "
            "version may move the figures slightly.", "",
            f"Environment that wrote this card: Python {env.get('python', NONE)} on {env.get('platform', NONE)}; "
            f"{packages}.", ""]


def card_text(recipe: Recipe, evidence: Evidence, paths: Paths, d2l: bool) -> str:
    """The whole model card from in-memory inputs; d2l's figures only when `d2l` (the data is
    d2l's hotdog.zip)."""
    scores = run_scores(evidence.predictions, evidence.classes)
    lines = [
        *_title(evidence.classes, d2l), *_summary(evidence.classes, paths), *_intended_use(evidence.classes),
        *_data_section(recipe, evidence, paths), *_recipe_section(recipe, evidence, paths),
        *_metrics_section(scores, evidence, d2l), *_limits_section(scores, evidence, recipe, d2l),
        *_reproduce_section(evidence.git, evidence.environment, recipe.data_url, recipe.data_sha1 is None),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
