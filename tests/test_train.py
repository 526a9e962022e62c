import copy
import json

import pytest
import torch
from conftest import write_params
from synthetic import write_weights
from torch import nn

from stages import decode
from stages.data import normalize
from stages.hardware import pick_precision
from stages.manifest import build_manifest
from stages.model import build_model
from stages.params import load_params
from stages.train import train_one_epoch, train_run


def test_one_step_uses_the_summed_loss():
    torch.manual_seed(0)
    model = build_model(None, "xavier")
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
    # Tolerance covers channels_last vs contiguous conv kernels; a mean loss would
    # give a step 4x smaller, far outside it.
    assert torch.allclose(step, summed, atol=1e-4)
    assert not torch.allclose(step, summed / 4, atol=1e-3)
    assert stats.examples == 4 and stats.loss_sum == pytest.approx(loss.item(), rel=1e-5)
    assert 0 < stats.step_seconds <= stats.wall_seconds


def run_twice(run):
    p = load_params("seed", "train", run)
    a = train_run(run, p.seed, p.train, getattr(p, run), p.paths)
    first = torch.load(p.paths.checkpoint(run), weights_only=True)
    b = train_run(run, p.seed, p.train, getattr(p, run), p.paths)
    second = torch.load(p.paths.checkpoint(run), weights_only=True)
    return p, a, b, first, second


@pytest.mark.parametrize("run", ["finetune", "scratch"])
def test_training_writes_its_outputs_and_repeats_exactly(tiny_project, run):
    write_weights(tiny_project / "data/weights/resnet18.pth")
    p = load_params("manifest")
    build_manifest(p.manifest, p.paths, workers=1)
    decode.main()
    p, a, b, first, second = run_twice(run)
    for key in ("loss", "train_acc", "test_acc"):
        assert a[key] == b[key]
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    assert first["params"] == {"seed": 0, "train": p.train.model_dump(), run: getattr(p, run).model_dump()}
    assert a["device"] == "cpu" and a["precision"] == pick_precision("auto", torch.device("cpu"))
    assert a["augment"] == "workers"  # auto, on the CPU
    epochs = json.loads(p.paths.run_epochs(run).read_text())
    assert [e["epoch"] for e in epochs] == [1]
    assert set(epochs[0]) == {"epoch", "loss", "train_acc", "test_acc", "examples_per_sec",
                              "examples_per_sec_wall", "epoch_seconds"}
    assert json.loads(p.paths.run_summary(run).read_text()) == b
    model = build_model(None, "default")
    model.load_state_dict(first["state_dict"])  # the checkpoint is a complete ResNet-18


def test_the_device_augmentation_path_trains_and_repeats_exactly(tiny_project):
    # augment: device (the CUDA default), run on the CPU. Its batches equal the workers
    # path's within a level (tests/test_data.py). The losses are not compared: a random
    # stand-in ResNet at 32 px, batch 4, in train mode turns a one-level change of the
    # input into a loss change of about 50% (measured), so only eval-mode outputs are stable.
    write_weights(tiny_project / "data/weights/resnet18.pth")
    p = load_params("manifest")
    build_manifest(p.manifest, p.paths, workers=1)
    decode.main()
    write_params(tiny_project / "params.yaml", {"train.augment": "device"})
    p, a, b, first, second = run_twice("finetune")
    assert a["augment"] == "device" and a == {**b, "train_seconds": a["train_seconds"],
                                              "examples_per_sec": a["examples_per_sec"],
                                              "examples_per_sec_wall": a["examples_per_sec_wall"]}
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
