import json
import random
import re

import pytest
import torch

from hotdog.core import events
from hotdog.core.errors import StageError
from hotdog.core.names import CLASSES, RUNS
from hotdog.core.params import load_params
from hotdog.core.schema import PREDICTIONS, read_table
from hotdog.evaluation.calibration import calibration_bins, expected_calibration_error
from hotdog.evaluation.evaluate import (
    confusion,
    ovr_auc,
    per_class,
    roc_auc,
    score,
)
from hotdog.model.inference import load_trained
from hotdog.model.resnet import build_model

pytestmark = pytest.mark.numeric  # rerun under AVX2 caps by make test


def brute_auc(scores, positive):
    pos = [s for s, p in zip(scores, positive) if p]
    neg = [s for s, p in zip(scores, positive) if not p]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_counting_with_ties():
    rng = random.Random(0)
    for _ in range(20):
        scores = [rng.choice([0.1, 0.2, 0.5, 0.7, 0.9]) for _ in range(40)]
        positive = [rng.random() < 0.4 for _ in range(40)]
        if 0 < sum(positive) < 40:
            assert roc_auc(scores, positive) == pytest.approx(brute_auc(scores, positive))
    assert roc_auc([0.9, 0.8, 0.1], [True, True, False]) == 1.0
    assert roc_auc([0.1, 0.2], [True, False]) == 0.0


def test_roc_auc_undefined_with_one_class():
    assert roc_auc([0.3, 0.4], [True, True]) is None


def test_per_class_from_confusion():
    counts = confusion([0, 0, 0, 1, 1], [0, 0, 1, 1, 0], 2)
    assert counts == [[2, 1], [1, 1]]
    stats = per_class(counts, CLASSES)
    assert stats["hotdog"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3})
    assert stats["not-hotdog"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per_class([[0, 0], [2, 0]], CLASSES)["not-hotdog"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_score_on_known_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    metrics, columns = score(logits, labels, CLASSES)
    assert metrics["accuracy"] == 0.5 and metrics["images"] == 4
    assert metrics["balanced_accuracy"] == 0.5 and metrics["majority_accuracy"] == 0.5
    assert metrics["confusion"] == {"hotdog": {"hotdog": 1, "not-hotdog": 1},
                                    "not-hotdog": {"hotdog": 1, "not-hotdog": 1}}
    expected_loss = torch.nn.functional.cross_entropy(logits, labels).item()
    assert metrics["loss"] == pytest.approx(expected_loss)
    assert columns["predicted"] == [0, 1, 0, 1]
    assert columns["probabilities"][0] == pytest.approx(torch.tensor([2.0, 0.0]).softmax(0).tolist())
    assert columns["confidence"][1] == pytest.approx(torch.tensor([0.0, 1.0]).softmax(0)[1].item())
    # hotdog scores: 0.88 (pos), 0.27 (pos), 0.73 (neg), 0.05 (neg) -> 3 of 4 pairs ordered
    assert metrics["roc_auc"] == pytest.approx(0.75)


def test_a_checkpoint_that_is_not_this_model_is_one_line(tmp_path):
    fix = "run `dvc repro finetune`"
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}}, tmp_path / "finetune.pt")
    torch.save({"state_dict": {"fc.weight": torch.zeros(3, 3)}, "classes": list(CLASSES)}, tmp_path / "finetune.pt")
    with pytest.raises(StageError, match=r"^checkpoint .*finetune.pt does not hold this project's ResNet-18 for "
                                         r"its 2 classes \(.+\); run `dvc repro finetune`$"):
        load_trained(tmp_path / "finetune.pt", fix)
    torch.save({"state_dict": {}}, tmp_path / "finetune.pt")
    with pytest.raises(StageError, match=r"finetune.pt does not record its classes \(an older version wrote it\)"):
        load_trained(tmp_path / "finetune.pt", fix)
    torch.save({"run": "finetune"}, tmp_path / "finetune.pt")
    with pytest.raises(StageError, match=r"finetune.pt has no state_dict; run `dvc repro finetune`$"):
        load_trained(tmp_path / "finetune.pt", fix)
    classes = ["cat", "dog", "fox"]
    model = build_model(None, "default", classes)
    torch.save({"state_dict": model.state_dict(), "params": {"seed": 3}, "classes": classes}, tmp_path / "finetune.pt")
    loaded, params, found = load_trained(tmp_path / "finetune.pt", fix)
    assert params == {"seed": 3} and found == ("cat", "dog", "fox") and torch.equal(loaded.fc.weight, model.fc.weight)
    assert loaded.fc.out_features == 3


@pytest.fixture
def events_on(monkeypatch):
    """The stages' events written to stdout, as under a flow (set before decoded_project runs decode)."""
    monkeypatch.setenv(events.ENV, "1")


def test_the_evaluate_stage_scores_both_checkpoints(capsys, events_on, decoded_project):
    from stages import _training
    from stages import evaluate as evaluate_stage

    for run in RUNS:
        _training.main(run)
    evaluate_stage.main()
    # Progress in a log (no terminal here): a line per tenth of each long pass, ending at the
    # whole, from decode (in the fixture), each training epoch and its test pass, and evaluate.
    out = capsys.readouterr().out
    for desc in ("decode train", "decode test", "finetune epoch 1/1", "finetune epoch 1/1, test",
                 "scratch epoch 1/1, test", "evaluate finetune", "evaluate scratch"):
        unit = "image" if desc.startswith("decode") else "batch"
        last = [line for line in out.splitlines() if line.startswith(f"{desc}: {unit} ")][-1:]
        assert last and re.fullmatch(rf"{desc}: {unit} (\d+)/\1", last[0]), (desc, out)
    # And the share done, for the flow's progress bar: rising to the whole in each stage.
    told = [e for e in map(events.parse, out.splitlines()) if isinstance(e, events.Progress)]
    for stage in ("decode", "finetune", "scratch", "evaluate"):
        done = [e.done for e in told if e.stage == stage]
        assert len(done) >= 2 and done == sorted(done) and done[-1] == 1.0, (stage, done)
    p = load_params(*evaluate_stage.PARAMS)
    metrics = json.loads(p.paths.evaluation.read_text())
    predictions = read_table(p.paths.predictions, PREDICTIONS, "evaluate")
    assert set(metrics) == set(RUNS) and predictions.num_rows == 2 * metrics["finetune"]["images"] == 16
    for run in RUNS:
        summary = json.loads(p.paths.run_summary(run).read_text())
        assert metrics[run]["accuracy"] == pytest.approx(summary["test_acc"])  # the same views, the same model
        assert metrics[run]["precision"] == "fp32"


def test_an_unbalanced_split_shows_a_model_that_learned_nothing():
    # 3 hotdogs, 1 not: always answering "hotdog" scores 0.75 accuracy and 0.5 balanced.
    logits = torch.tensor([[1.0, 0.0]] * 4)
    metrics, _ = score(logits, torch.tensor([0, 0, 0, 1]), CLASSES)
    assert metrics["accuracy"] == 0.75 and metrics["majority_accuracy"] == 0.75
    assert metrics["balanced_accuracy"] == 0.5
    metrics, _ = score(torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]]), torch.tensor([0, 0, 0, 1]), CLASSES)
    assert metrics["balanced_accuracy"] == 1.0
    metrics, _ = score(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]), CLASSES)  # one class only
    assert metrics["balanced_accuracy"] == 0.5 and metrics["majority_accuracy"] == 1.0


def test_three_classes_are_scored_by_name_one_vs_rest():
    names = ("cat", "dog", "fox")
    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 1, 2, 2, 1])
    metrics, columns = score(logits, labels, names)
    assert metrics["classes"] == list(names) and "top5_accuracy" not in metrics
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["confusion"] == {"cat": {"cat": 1, "dog": 0, "fox": 0}, "dog": {"cat": 0, "dog": 1, "fox": 1},
                                    "fox": {"cat": 1, "dog": 0, "fox": 1}}
    assert metrics["per_class"]["dog"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert metrics["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert metrics["majority_accuracy"] == pytest.approx(2 / 5)
    probs = logits.softmax(1)
    expected = sum(brute_auc(probs[:, k].tolist(), [t == k for t in labels.tolist()]) for k in range(3)) / 3
    assert metrics["roc_auc"] == pytest.approx(expected)
    assert [sum(p) for p in columns["probabilities"]] == pytest.approx([1.0] * 5)
    assert columns["predicted"] == [0, 1, 2, 0, 2]


def test_two_classes_keep_the_binary_auc_of_the_first_class():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]])
    assert ovr_auc(probs, [0, 0, 1, 1]) == pytest.approx(brute_auc([0.9, 0.4, 0.7, 0.2], [True, True, False, False]))


def test_top5_accuracy_past_five_classes():
    names = tuple("abcdefg")
    logits = torch.tensor([[7.0, 6, 5, 4, 3, 2, 1], [7.0, 6, 5, 4, 3, 2, 1], [1.0, 2, 3, 4, 5, 6, 7]])
    metrics, _ = score(logits, torch.tensor([4, 5, 2]), names)  # ranks 5 (in), 6 (out), 5 (in)
    assert metrics["top5_accuracy"] == pytest.approx(2 / 3)


def test_calibration_error_is_the_weighted_gap_per_bin():
    # Two bins used: (0.8, 0.867] holds 0.85 x4 with 3 right; (0.933, 1] holds 0.95 x2, both wrong.
    confidence, correct = [0.85] * 4 + [0.95] * 2, [True, True, True, False, False, False]
    bins = calibration_bins(confidence, correct)
    assert sum(b["count"] for b in bins) == 6 and len(bins) == 15
    assert expected_calibration_error(confidence, correct) == pytest.approx(4 / 6 * 0.1 + 2 / 6 * 0.95)
    assert expected_calibration_error([1.0, 1.0], [True, True]) == 0.0
