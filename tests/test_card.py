"""The model card: its bootstrap intervals, the most confused classes, dvc.lock's digests, the
git commit, and the card itself from the report's tiny fake pipeline (tests/test_report.py),
which must come out byte-identical from the same inputs."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ENV, sh
from ruamel.yaml import YAML
from test_report import HOTDOG, OTHER_SHA1, THREE, _mistakes, make_pipeline

from hotdog.core.errors import StageError
from hotdog.core.names import RUNS, SPLITS
from hotdog.core.params import load_params
from hotdog.evaluation import card, results
from hotdog.evaluation.report import read_inputs
from stages import report as report_stage

# ---------------------------------------------------------------- bootstrap


def _labels(per_class: list[tuple[int, int]], times: int = 1) -> tuple[list[int], list[int]]:
    """Labels and predictions with (right, wrong) images per class, `times` over; a wrong one is
    taken for the next class."""
    labels, predicted = [], []
    for label, (right, wrong) in enumerate(per_class):
        labels += [label] * (right + wrong) * times
        predicted += ([label] * right + [(label + 1) % len(per_class)] * wrong) * times
    return labels, predicted


RIGHT_WRONG = [(40, 10), (25, 5), (18, 2)]  # 100 images, 3 classes


def test_bootstrap_point_estimates_are_the_splits_own():
    scores = card.bootstrap_scores(*_labels(RIGHT_WRONG), THREE)
    assert scores.images == 100
    assert scores.accuracy.value == pytest.approx(0.83)
    assert [scores.recall[c].value for c in THREE] == pytest.approx([0.8, 25 / 30, 0.9])
    assert scores.balanced_accuracy.value == pytest.approx((0.8 + 25 / 30 + 0.9) / 3)


def test_bootstrap_is_fixed_by_its_seed():
    data = _labels(RIGHT_WRONG)
    assert card.bootstrap_scores(*data, THREE) == card.bootstrap_scores(*data, THREE)
    assert card.bootstrap_scores(*data, THREE, seed=1) != card.bootstrap_scores(*data, THREE)


def _intervals(scores: card.Scores) -> list[card.Interval]:
    return [scores.accuracy, scores.balanced_accuracy, *scores.recall.values()]


def test_bootstrap_intervals_hold_the_point_estimate():
    for iv in _intervals(card.bootstrap_scores(*_labels(RIGHT_WRONG), THREE)):
        assert iv.low < iv.value < iv.high
        assert 0 <= iv.low and iv.high <= 1


def test_bootstrap_intervals_narrow_with_more_images():
    small = _intervals(card.bootstrap_scores(*_labels(RIGHT_WRONG), THREE))
    large = _intervals(card.bootstrap_scores(*_labels(RIGHT_WRONG, times=10), THREE))
    for s, big in zip(small, large):
        assert big.value == pytest.approx(s.value)
        # 10 times the images: about sqrt(10) times narrower
        assert (big.high - big.low) < 0.5 * (s.high - s.low)


def test_bootstrap_draws_as_resampling_the_images_would():
    # The multinomial draw of the counts stands in for resampling images: the same percentiles.
    labels, predicted = map(np.array, _labels(RIGHT_WRONG))
    rng = np.random.default_rng(123)
    picks = rng.integers(0, len(labels), size=(20000, len(labels)))
    accuracy = (labels[picks] == predicted[picks]).mean(1)
    hits = labels[picks] == 0
    recall0 = (hits & (predicted[picks] == 0)).sum(1) / hits.sum(1)
    scores = card.bootstrap_scores(labels, predicted, THREE, resamples=20000)
    assert [scores.accuracy.low, scores.accuracy.high] == pytest.approx(np.percentile(accuracy, [2.5, 97.5]),
                                                                        abs=0.011)
    assert [scores.recall["cat"].low, scores.recall["cat"].high] == pytest.approx(
        np.percentile(recall0, [2.5, 97.5]), abs=0.021)


def test_bootstrap_with_a_rare_class_and_an_absent_one():
    # One fox image: many resamples draw none, and leave it out of that resample's balanced
    # accuracy; a class with no test image has no recall at all.
    scores = card.bootstrap_scores(*_labels([(30, 0), (30, 0), (1, 0)]), THREE)
    assert scores.recall["fox"] == (1.0, 1.0, 1.0)
    assert scores.balanced_accuracy == (1.0, 1.0, 1.0)
    scores = card.bootstrap_scores(*_labels([(8, 2), (5, 5)]), (*THREE[:2], "absent"))
    assert math.isnan(scores.recall["absent"].value) and math.isnan(scores.recall["absent"].low)
    assert card.interval_text(scores.recall["absent"]) == "—"
    assert scores.balanced_accuracy.value == pytest.approx((0.8 + 0.5) / 2)


def test_interval_text():
    assert card.interval_text(card.Interval(0.875, 0.8125, 0.93125)) == "0.875 (0.812–0.931)"
    assert card.interval_text(card.Interval(0.5, math.nan, math.nan)) == "0.500"


# ---------------------------------------------------------------- most confused


def test_most_confused_largest_first_ties_in_label_order():
    confusion = {"cat": {"cat": 5, "dog": 3, "fox": 1},
                 "dog": {"cat": 3, "dog": 9, "fox": 0},
                 "fox": {"cat": 4, "dog": 0, "fox": 20}}
    pairs = card.most_confused(confusion, THREE)
    assert [(c.true, c.predicted, c.count) for c in pairs] == [("fox", "cat", 4), ("cat", "dog", 3),
                                                                ("dog", "cat", 3)]
    assert pairs[0].share == pytest.approx(4 / 24) and pairs[1].share == pytest.approx(3 / 9)
    assert len(card.most_confused(confusion, THREE, top=5)) == 4  # only the non-zero cells
    diagonal = {a: {p: 7 * (a == p) for p in THREE} for a in THREE}
    assert card.most_confused(diagonal, THREE) == []


# ---------------------------------------------------------------- dvc.lock


LOCK = """\
schema: '2.0'
stages:
  download:
    cmd: python -m stages.download
    deps:
    - path: data/raw/source.json
      hash: md5
      md5: 0123456789abcdef0123456789abcdef
      size: 120
    params:
      params.yaml:
        data.url: http://example.com/hotdog.zip
    outs:
    - path: data/hotdog
      hash: md5
      md5: 8d0c3b1c4c0b6b2b9e1f1d3f00a1b2c3.dir
      size: 261000000
      nfiles: 2800
    - path: data/raw/hotdog.zip
      hash: md5
      md5: 3d7c3b1c4c0b6b2b9e1f1d3f00a1b2c3
      size: 261292301
  weights:
    cmd: python -m stages.weights
    outs:
    - path: data/weights/resnet18.pth
      hash: md5
      md5: aa7c3b1c4c0b6b2b9e1f1d3f00a1b2c3
      size: 46830571
"""


def test_read_lock_gives_every_recorded_output(tmp_path):
    (tmp_path / "dvc.lock").write_text(LOCK)
    digests = card.read_lock(tmp_path / "dvc.lock")
    assert digests == {"data/hotdog": "8d0c3b1c4c0b6b2b9e1f1d3f00a1b2c3.dir",
                       "data/raw/hotdog.zip": "3d7c3b1c4c0b6b2b9e1f1d3f00a1b2c3",
                       "data/weights/resnet18.pth": "aa7c3b1c4c0b6b2b9e1f1d3f00a1b2c3"}  # deps are not outputs
    assert card.recorded(digests, Path("data/raw/hotdog.zip")) == "md5 `3d7c3b1c4c0b6b2b9e1f1d3f00a1b2c3` (dvc.lock)"
    assert card.recorded(digests, Path("models/finetune.pt")) == "not recorded in dvc.lock"


def test_read_lock_without_one_or_with_a_broken_one(tmp_path):
    assert card.read_lock(tmp_path / "dvc.lock") is None
    assert card.recorded(None, Path("data/raw/hotdog.zip")) == "not recorded (no dvc.lock)"
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert card.read_lock(tmp_path / "dvc.lock") == {}
    (tmp_path / "dvc.lock").write_text("stages:\n  download:\n<<<<<<< HEAD\n  outs: [\n")
    with pytest.raises(StageError, match=r"dvc.lock is not valid YAML \(.*\); restore it") as caught:
        card.read_lock(tmp_path / "dvc.lock")
    assert "\n" not in str(caught.value)


def test_read_lock_reads_what_dvc_writes(tmp_path):
    # The real DVC, so a change in its lock format shows here.
    sh(tmp_path, "git", "init", "-q")
    sh(tmp_path, "dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text("stages:\n  make:\n    cmd: mkdir -p out && printf hi > out/a && "
                                       "printf zip > data.zip\n    outs:\n      - data.zip\n      - out\n")
    sh(tmp_path, "dvc", "repro", "-q")
    digests = card.read_lock(tmp_path / "dvc.lock")
    assert digests["data.zip"] == hashlib.md5(b"zip").hexdigest()
    assert digests["out"].endswith(".dir")


# ---------------------------------------------------------------- git


def _repo(root: Path) -> str:
    """A git repo at root holding its files in one commit; its commit."""
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-q", "-m", "run")
    return sh(root, "git", "rev-parse", "HEAD").strip()


def test_git_state_outside_a_repository(tmp_path):
    assert card.git_state(tmp_path) == (None, None, "not a git repository", (), ())
    sh(tmp_path, "git", "init", "-q")
    assert card.git_state(tmp_path) == (None, None, "a git repository with no commit yet", (), ())


def test_git_state_commit_and_changes_besides_the_outputs(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "sub").mkdir()
    for name in ("dvc.lock", "metrics/evaluate.json", "sub/.gitignore", "stage.py"):
        (tmp_path / name).write_text("one\n")
    (tmp_path / "params.yaml").write_text("seed: 0\ntrain:\n  epochs: 5\n  device: auto\n")
    commit = _repo(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    assert card.git_state(tmp_path, [Path("metrics")]) == (commit, False, "", (), ())
    # What a running `dvc repro` rewrites, and new files, are no change to the code and params.
    for name in ("dvc.lock", "metrics/evaluate.json", "sub/.gitignore", "new.txt"):
        (tmp_path / name).write_text("two\n")
    assert card.git_state(tmp_path, [Path("metrics")]) == (commit, False, "", (), ())
    assert card.git_state(tmp_path)[:4] == (commit, True, "", ("metrics/evaluate.json",))  # not left out this time
    # A param changed, as `dvc exp run -S` or an edit before `dvc repro` leaves it: named, with its values.
    (tmp_path / "params.yaml").write_text("seed: 0\ntrain:\n  epochs: 2\n  device: auto\n  new: x\n")
    assert card.git_state(tmp_path, [Path("metrics")]) == (
        commit, True, "", ("params.yaml",), (("train.epochs", 5, 2), ("train.new", card.ABSENT, "x")))
    (tmp_path / "stage.py").write_text("two\n")
    assert card.git_state(tmp_path, [Path("metrics")]).changed == ("params.yaml", "stage.py")
    (tmp_path / "grüne.py").write_text("one\n")
    sh(tmp_path, "git", "add", "grüne.py")
    assert "grüne.py" in card.git_state(tmp_path, [Path("metrics")]).changed  # not "gr\303\274ne.py"
    sh(tmp_path, "git", "add", "stage.py")  # staged but not committed is still a change
    assert card.git_state(tmp_path, [Path("metrics")])[:4] == (commit, True, "", ("grüne.py", "params.yaml", "stage.py"))


def test_the_card_names_uncommitted_changes_and_how_to_rebuild_that_run(tmp_path):
    # The usual order: edit params, `dvc repro`, `git commit`. The card was written before the
    # commit, so it names the one before; it said "commit them and run `dvc repro` again", which
    # re-runs nothing, and its `git checkout` gave other params.
    root = pipeline(tmp_path)
    values = card.GitState(GIT.commit, True, "", ("params.yaml",),
                           (("data.url", "http://x/a.zip", "/home/me/my photos"), ("train.epochs", 5, 2),
                            ("scratch.lr", 0.1, 0.001)))
    text = render(root, None, values)
    assert (f"- Commit: `{GIT.commit}`, and this run had uncommitted changes to tracked files (the pipeline's outputs, "
            "dvc.lock and .gitignore files aside): `params.yaml` (`data.url` http://x/a.zip → /home/me/my photos; "
            "`train.epochs` 5 → 2; `scratch.lr` 0.1 → 0.001). To have this card name a commit that holds them, "
            "commit them, then `dvc repro --force --single-item report` writes it again") in text
    block = text[text.index("```sh"):text.index("```", text.index("```sh") + 5)]
    assert block.splitlines()[2:] == [f"git checkout {GIT.commit}",
                                      "dvc exp run -S \"data.url='/home/me/my photos'\" -S train.epochs=2 "
                                      "-S scratch.lr=0.001"]
    assert "`dvc exp run` downloads the data" in text and "does not give this run" not in text

    unknown = values._replace(params=None)  # the commit's params.yaml is not YAML
    text = render(root, None, unknown)
    assert "`params.yaml` (its values could not be compared with the commit's)" in text
    assert "The commit alone does not give this run" in text

    code = values._replace(changed=("hotdog/training/train.py", "params.yaml"))
    text = render(root, None, code)
    assert "`hotdog/training/train.py`, `params.yaml` (`data.url`" in text
    assert "The commit alone does not give this run: it ran with the changes above." in text
    assert f"git checkout {GIT.commit}\ndvc repro\n```" in text


def test_the_reproduce_command_sets_what_dvc_reads_back(tmp_path):
    # The card's `dvc exp run -S` words, read by DVC's own parser for -S, give the run's values.
    from dvc.utils.hydra import apply_overrides as dvc_set_params

    root = pipeline(tmp_path)
    changes = (("data.url", "http://x/a.zip", "/home/me/it's (2023)/${HOME}"), ("data.sha1", "a" * 40, None),
               ("train.epochs", 5, 2), ("weights.sha256", "ab", "19637419"))
    text = render(root, None, card.GitState(GIT.commit, True, "", ("params.yaml",), changes))
    command = next(line for line in text.splitlines() if line.startswith("dvc exp run "))
    words = shlex.split(command)
    (tmp_path / "p.yaml").write_text("data:\n  url: x\n  sha1: y\ntrain:\n  epochs: 1\nweights:\n  sha256: z\n")
    dvc_set_params(tmp_path / "p.yaml", [w for flag, w in zip(words, words[1:]) if flag == "-S"])
    got = YAML(typ="safe").load((tmp_path / "p.yaml").read_text())
    assert (got["data"]["url"], got["data"]["sha1"], got["train"]["epochs"], got["weights"]["sha256"]) == (
        "/home/me/it's (2023)/${HOME}", None, 2, "19637419")


def test_environment_names_the_versions_without_machine_details():
    env = card.environment()
    assert set(env) == {"python", "platform", *card.PACKAGES}
    assert env["numpy"] == np.__version__ and env["python"] == platform.python_version()
    assert env["platform"] == f"{platform.system()} {platform.machine()}"  # no host name, no kernel build


# ---------------------------------------------------------------- the card


def write_split_summary(root: Path, layout: str = "split", test_fraction: float | None = None,
                        duplicates: tuple[int, int] = (0, 0)) -> dict:
    """metrics/manifest.json as the manifest stage writes it, counted from the fake manifests."""
    paths = load_params(path=root / "params.yaml").paths
    summary: dict = {"layout": layout, "test_fraction": test_fraction,
                     "duplicates": {"copies": duplicates[0], "left_out_of_train": duplicates[1]}}
    for split in SPLITS:
        manifest = results.read_manifest(root / paths.manifest_file(split))
        summary["classes"] = list(manifest.classes)
        summary[split] = {"images": len(manifest.rows), "rejected": 1 if split == "train" else 0,
                          "per_class": {c: sum(r["class_name"] == c for r in manifest.rows) for c in manifest.classes}}
    (root / paths.manifest_summary).write_text(json.dumps(summary))
    return summary


def pipeline(root: Path, classes: tuple[str, ...] = HOTDOG, sha1: str = results.D2L_SHA1, **summary) -> Path:
    """The report's fake pipeline under root (d2l's classes: 5 test images each, test_report's
    mistakes; others: 2 each), with metrics/manifest.json."""
    if classes == HOTDOG:
        make_pipeline(root, sha1=sha1)
    else:
        make_pipeline(root, _mistakes(classes), classes, per_class=2, sha1=sha1)
    write_split_summary(root, **summary)
    return root


GIT = card.GitState("0123456789abcdef0123456789abcdef01234567", False, "")
ENVIRONMENT = {"python": "3.11.7", "platform": "Linux x86_64", "torch": "2.14.1", "torchvision": "0.29.1",
               "numpy": "2.4.6", "pillow": "13.0.0"}


def render(root: Path, digests: dict | None = None, git: card.GitState = GIT) -> str:
    """The card of the fake pipeline at root, with a fixed commit and environment."""
    p = load_params(*report_stage.PARAMS, path=root / "params.yaml")
    paths = p.paths.under(root)
    inputs = read_inputs(paths)
    evidence = card.Evidence(inputs.classes, card.read_split_summary(paths, inputs.classes), inputs.summaries,
                             inputs.evaluation, inputs.predictions, digests, git, ENVIRONMENT)
    recipe = card.Recipe(p.seed, p.data.url, p.data.sha1, p.weights, p.train, {r: getattr(p, r) for r in RUNS})
    return card.card_text(recipe, evidence, p.paths, results.is_d2l_data(p.data.sha1))


def _row(text: str, first_cell: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


SECTIONS = ["## Intended use", "## Data", "## Recipe", "## Metrics (test split, 10 images)", "## Limits",
            "## How to reproduce"]
INTERVAL = r"\d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)"


def test_card_for_d2l_data(tmp_path):
    root = pipeline(tmp_path)
    text = render(root, None)
    assert text.startswith("# Model card: hotdog recognition")
    assert [line for line in text.splitlines() if line.startswith("## ")] == SECTIONS
    assert _row(text, "metric") == ["metric", "fine-tune", "scratch", "majority baseline", "d2l fine-tune",
                                    "d2l scratch"]
    accuracy = _row(text, "accuracy")
    assert re.fullmatch(INTERVAL, accuracy[1]) and accuracy[1].startswith("0.800 ")  # 2 of 10 wrong
    assert accuracy[2].startswith("0.700 ") and accuracy[3:] == ["0.500", "0.939", "0.843"]
    assert _row(text, "balanced accuracy")[3:] == ["0.500", "—", "—"]
    assert _row(text, "recall: hotdog")[3] == "1.000" and _row(text, "recall: not-hotdog")[3] == "0.000"
    assert "always answering hotdog, the test split's largest class" in text
    assert "scratch: hotdog → not-hotdog: 2 (40.0% of hotdog); not-hotdog → hotdog: 1 (20.0% of not-hotdog)." in text
    assert "0.046 (fine-tune) and 0.123 (scratch)" in text
    assert "its chapter says the images were gathered online" in text
    assert "`data/raw/hotdog.zip` not recorded (no dvc.lock)" in text
    assert f"SHA-1 `{results.D2L_SHA1}` (data.sha1" in text
    assert _row(text, "hotdog") == ["hotdog", "5 (50.0%)", "5 (50.0%)", "50%"]
    assert _row(text, "total")[1:] == ["10", "10", "50%"]
    assert "`dvc repro` downloads the data and the weights again and checks their digests, then trains" in text
    assert "unreadable images (1 of train and 0 of test)" in text and "Duplicates" not in text
    assert ("- Split: the data set's own folders: train/ for training, and test/ (or, where there is none, val/, "
            "valid/ or validation/) for testing.") in text
    assert _row(text, "learning rate, output layer") == ["learning rate, output layer", "0.0005 (10 × body's)",
                                                         "0.0005"]
    assert f"Commit: `{GIT.commit}`. Uncommitted changes to tracked files" in text and ": none." in text
    assert f"git checkout {GIT.commit}" in text and "dvc repro" in text
    assert "Python 3.11.7 on Linux x86_64; torch 2.14.1, torchvision 0.29.1, numpy 2.4.6, pillow 13.0.0." in text
    assert str(tmp_path) not in text


def test_card_for_a_folder_of_photos_says_reproducing_needs_that_folder(tmp_path):
    # data.sha1 is null for a folder: nothing downloads it again on another machine.
    root = pipeline(tmp_path, THREE, OTHER_SHA1, layout="folders", test_fraction=0.2, duplicates=(1, 0))
    params = root / "params.yaml"
    params.write_text(params.read_text().replace(f"sha1: {OTHER_SHA1}", "sha1: null").replace(
        "url: http://d2l-data.s3-accelerate.amazonaws.com/hotdog.zip", "url: /home/me/photos"))
    text = render(root)
    assert "none in params (data.sha1 is null: a folder" in text
    assert ("`dvc repro` packs the photos in `/home/me/photos` (data.url) again, which must hold the same ones on that "
            "machine, and downloads the weights again and checks their digest, then trains both models") in text
    assert "- Duplicates: 1 image is an extra copy of another (the same SHA-1); the 0 in train" in text


def test_card_for_other_data_with_dvc_lock(tmp_path):
    root = pipeline(tmp_path, THREE, OTHER_SHA1, layout="folders", test_fraction=0.2, duplicates=(3, 1))
    (root / "dvc.lock").write_text(LOCK)
    text = render(root, card.read_lock(root / "dvc.lock"), card.GitState(None, None, "not a git repository"))
    assert text.startswith("# Model card: image classification, 3 classes")
    assert "d2l fine-tune" not in text and "0.939" not in text
    assert "d2l's published figures are for its hotdog.zip" in text
    assert "This card cannot know how they were gathered" in text and "gathered online" not in text
    assert [_row(text, f"recall: {c}")[0] for c in THREE] == [f"recall: {c}" for c in THREE]
    assert all(re.fullmatch(INTERVAL, cell) for c in THREE for cell in _row(text, f"recall: {c}")[1:3])
    assert _row(text, "balanced accuracy")[3] == "0.333"
    assert "`data/raw/hotdog.zip` md5 `3d7c3b1c4c0b6b2b9e1f1d3f00a1b2c3` (dvc.lock)" in text
    assert "`data/hotdog` md5 `8d0c3b1c4c0b6b2b9e1f1d3f00a1b2c3.dir` (dvc.lock)" in text
    assert "`data/weights/resnet18.pth` md5 `aa7c3b1c4c0b6b2b9e1f1d3f00a1b2c3` (dvc.lock)" in text
    assert ("made by the pipeline: an image is in test when its SHA-1, read as a number in [0, 1), is below 0.2 "
            "(data.test_fraction), so each class is 20% test in expectation; the shares drawn are in the table "
            "below") in text
    assert "3 images are extra copies of another (the same SHA-1); the 1 in train" in text
    assert "`dvc repro` downloads the data and the weights again" in text
    assert "- Commit: not recorded (not a git repository)." in text and "git checkout <commit>" in text


def test_card_is_the_same_text_twice(tmp_path):
    root = pipeline(tmp_path, THREE, OTHER_SHA1)
    assert render(root) == render(root)


@pytest.mark.parametrize("name, damage, message", [
    ("missing", lambda path: path.unlink(), r"metrics/manifest.json is missing; run `dvc repro manifest`"),
    ("json", lambda path: path.write_text("{"), r"metrics/manifest.json is malformed \(not valid JSON"),
    ("count", lambda path: _edit(path, lambda d: d["test"]["per_class"].update(hotdog=-1)),
     r"metrics/manifest.json is malformed \(test.per_class.hotdog: expected a count\); re-run `dvc repro manifest`"),
    ("layout", lambda path: _edit(path, lambda d: d.update(layout="other")), r"layout: expected 'split' or"),
    ("stale", lambda path: _edit(path, _rename_class),
     r"metrics/manifest.json records the classes hotdog, other, but data/manifest/test.parquet records "
     r"hotdog, not-hotdog; re-run `dvc repro manifest`"),
])
def test_read_split_summary_names_bad_input(tmp_path, monkeypatch, name, damage, message):
    root = pipeline(tmp_path)
    damage(root / "metrics/manifest.json")
    monkeypatch.chdir(root)
    with pytest.raises(StageError, match=message) as caught:
        card.read_split_summary(load_params().paths, HOTDOG)
    assert "\n" not in str(caught.value)


def test_stage_without_the_split_summary_writes_nothing(tmp_path, monkeypatch):
    root = pipeline(tmp_path)
    (root / "metrics/manifest.json").unlink()
    monkeypatch.chdir(root)
    with pytest.raises(StageError, match=r"metrics/manifest.json is missing; run `dvc repro manifest`"):
        report_stage.main()
    assert not (root / "reports").exists()  # the card is made before any output is written


def _rename_class(summary: dict) -> None:
    """As an older run of another data set left it: consistent, but not these classes."""
    summary["classes"] = ["hotdog", "other"]
    for split in SPLITS:
        summary[split]["per_class"]["other"] = summary[split]["per_class"].pop("not-hotdog")


def _edit(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------- the stage


def test_stage_writes_the_same_card_twice_in_a_git_repo(tmp_path, monkeypatch):
    root = pipeline(tmp_path)
    lock = YAML(typ="safe").load(LOCK)
    lock["stages"]["evaluate"] = {"cmd": "python -m stages.evaluate",
                                  "outs": [{"path": "metrics/evaluate.json", "hash": "md5", "md5": "e" * 32}]}
    YAML(typ="safe").dump(lock, root / "dvc.lock")
    commit = _repo(root)
    monkeypatch.chdir(root)
    report_stage.main()
    first = (root / "reports/model_card.md").read_bytes()
    # What `dvc repro` rewrites changes (dvc.lock, an output it records); the card does not.
    lock["stages"]["report"] = {"cmd": "python -m stages.report",
                                "outs": [{"path": "reports/report.md", "hash": "md5", "md5": "f" * 32}]}
    YAML(typ="safe").dump(lock, root / "dvc.lock")
    (root / "metrics/evaluate.json").write_text((root / "metrics/evaluate.json").read_text() + "\n")
    report_stage.main()
    assert (root / "reports/model_card.md").read_bytes() == first
    text = first.decode()
    assert f"Commit: `{commit}`" in text
    assert "(the pipeline's outputs, dvc.lock and .gitignore files aside): none." in text
    assert "`data/raw/hotdog.zip` md5 `3d7c3b1c4c0b6b2b9e1f1d3f00a1b2c3` (dvc.lock)" in text
    assert report_stage.model_card(load_params().paths) in report_stage.outputs(load_params().paths)
    (root / "params.yaml").write_text((root / "params.yaml").read_text() + "\n# edited\n")
    report_stage.main()
    edited = (root / "reports/model_card.md").read_text()
    assert "aside): `params.yaml` (no value changed). To have this card name a commit" in edited
    assert f"git checkout {commit}\ndvc repro\n```" in edited and "does not give this run" not in edited


def test_stage_in_a_subprocess_writes_the_card_beside_the_report(tmp_path):
    root = pipeline(tmp_path, THREE, OTHER_SHA1)
    done = subprocess.run([sys.executable, "-m", "stages.report"], cwd=root, capture_output=True, text=True,
                          timeout=120, env={**ENV, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "reports").iterdir()) == ["figures", "model_card.md", "report.md"]
    assert "- Commit: not recorded (not a git repository)." in (root / "reports/model_card.md").read_text()
