import copy
import json

import pytest
import torch
from conftest import write_params
from torch import nn

from hotdog.core.names import CLASSES
from hotdog.core.params import load_params
from hotdog.data.transforms import normalize
from hotdog.model.resnet import build_model
from hotdog.training.train import train_one_epoch
from stages import _training

pytestmark = pytest.mark.numeric  # rerun under AVX2 caps by make test


def test_one_step_uses_the_summed_loss():
    torch.manual_seed(0)
    model = build_model(None, "xavier", CLASSES)
    twin = copy.deepcopy(model)
    before = model.fc.weight.detach().clone()
    x, y = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1, 1, 0])
    lr = 0.01
    stats = train_one_epoch(model, [(x, y)], torch.optim.SGD(model.parameters(), lr=lr),
                            torch.device("cpu"), "fp32", desc="test")
    # The seed's step, by hand: gradient of the SUM of per-example losses.
    loss = nn.functional.cross_entropy(twin(normalize(x)), y, reduction="sum")
    loss.backward()
    step = (model.fc.weight - before).detach()
    summed = -lr * twin.fc.weight.grad
    # What must be told apart: the sum against the mean over 4 examples, a factor of 4.
    # Had the stage used the mean, its step and loss would be off by 75% (and 300% the
    # other way), so 1% tells them apart with room to spare. It is not a rounding bound:
    # the stage runs channels_last kernels and the hand-made twin contiguous ones, and
    # which kernels those are depends on the CPU (measured: 1.3e-5 apart on a Zen 3).
    assert relative_error(step, summed) < 0.01
    assert relative_error(step, summed / 4) > 0.5
    assert stats.examples == 4 and stats.loss_sum == pytest.approx(loss.item(), rel=0.01)
    assert stats.loss_sum != pytest.approx(loss.item() / 4, rel=0.5)
    assert 0 < stats.step_seconds <= stats.wall_seconds


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    """|got - expected| / |expected|, over the whole tensor."""
    return ((got - expected).norm() / expected.norm()).item()


def train_once(run):
    """Run a training stage's main; (its summary, its checkpoint)."""
    _training.main(run)
    p = load_params(*_training.params(run))
    return json.loads(p.paths.run_summary(run).read_text()), torch.load(p.paths.checkpoint(run), weights_only=True)


def run_twice(run):
    a, first = train_once(run)
    b, second = train_once(run)
    return load_params(*_training.params(run)), a, b, first, second


def same_weights(first: dict, second: dict) -> bool:
    """Two checkpoints hold bit-identical tensors."""
    return first["state_dict"].keys() == second["state_dict"].keys() and all(
        torch.equal(v, second["state_dict"][k]) for k, v in first["state_dict"].items())


@pytest.mark.repeats  # a run against itself: make test's ISA-capped reruns leave it out
@pytest.mark.parametrize("run", ["finetune", "scratch"])
def test_training_writes_its_outputs_and_repeats_exactly(decoded_project, run):
    p, a, b, first, second = run_twice(run)
    for key in ("loss", "train_acc", "test_acc"):
        assert a[key] == b[key]
    assert same_weights(first, second)
    assert first["params"] == {"seed": 0, "train": p.train.model_dump(), run: getattr(p, run).model_dump()}
    assert a["device"] == "cpu" and a["precision"] == "fp32"  # as TINY pins it
    assert a["augment"] == "workers"  # auto, on the CPU
    epochs = json.loads(p.paths.run_epochs(run).read_text())
    assert [e["epoch"] for e in epochs] == [1]
    assert set(epochs[0]) == {"epoch", "loss", "train_acc", "test_acc", "examples_per_sec",
                              "examples_per_sec_wall", "epoch_seconds"}
    model = build_model(None, "default", CLASSES)
    model.load_state_dict(first["state_dict"])  # the checkpoint is a complete ResNet-18


@pytest.mark.repeats  # a run against itself: make test's ISA-capped reruns leave it out
def test_the_device_augmentation_path_trains_and_repeats_exactly(decoded_project):
    # augment: device (the CUDA default), run on the CPU. Its batches equal the workers
    # path's within a level (tests/test_data.py). The losses are not compared: a random
    # stand-in ResNet at 32 px, batch 4, in train mode turns a one-level change of the
    # input into a loss change of about 50% (measured), so only eval-mode outputs are stable.
    write_params(decoded_project / "params.yaml", {"train.augment": "device"})
    p, a, b, first, second = run_twice("finetune")
    assert a["augment"] == "device" and a == {**b, "train_seconds": a["train_seconds"],
                                              "examples_per_sec": a["examples_per_sec"],
                                              "examples_per_sec_wall": a["examples_per_sec_wall"]}
    assert same_weights(first, second)


@pytest.mark.repeats  # a run against itself: make test's ISA-capped reruns leave it out
def test_bf16_training_on_the_cpu_runs_and_repeats_exactly(decoded_project):
    # bf16 on purpose: `precision: auto` picks it on CPUs with AVX512-BF16 or AMX, and the
    # other tests pin fp32. Without those instructions it is emulated, slowly, so this
    # runs on every CPU.
    write_params(decoded_project / "params.yaml", {"train.precision": "bf16"})
    p, a, b, first, second = run_twice("finetune")
    assert a["precision"] == "bf16" and a["loss"] == b["loss"] and a["test_acc"] == b["test_acc"]
    assert same_weights(first, second)
    assert all(v.dtype == torch.float32 for v in first["state_dict"].values() if v.is_floating_point())


@pytest.mark.repeats  # a run against itself: make test's ISA-capped reruns leave it out
def test_runtime_num_workers_changes_no_result(decoded_project):
    # Why runtime.num_workers is no DVC param: the epoch plan fixes every crop, so the
    # worker count cannot change what is trained (tests/test_seams.py: no stage declares it).
    summaries, checkpoints = [], []
    for workers in (0, 2):
        write_params(decoded_project / "params.yaml", {"runtime.num_workers": workers})
        summary, checkpoint = train_once("finetune")
        summaries.append({k: v for k, v in summary.items() if "sec" not in k})
        checkpoints.append(checkpoint)
    assert summaries[0] == summaries[1] and same_weights(*checkpoints)

