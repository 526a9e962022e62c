"""hotdog.training.optim.SGD takes the same steps as torch.optim.SGD, bit for bit."""

import copy

import pytest
import torch
from torch import nn

from hotdog.core.names import CLASSES
from hotdog.model.resnet import build_model, freeze_body, param_groups
from hotdog.training.optim import SGD

pytestmark = pytest.mark.numeric  # rerun under AVX2 caps by make test
# CUDA too where there is one (a GPU machine running pytest); listed only then, so that CI,
# which has none, runs every test it collects and skips none.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def steps(model: nn.Module, optimizer, device: str, n: int = 3) -> None:
    """n steps of the summed loss on fixed random batches."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(n):
        x = torch.randn(4, 3, 32, 32, generator=generator).to(device)
        y = torch.randint(0, 2, (4,), generator=generator).to(device)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
        optimizer.step()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("head_lr_mult, frozen", [(10, False), (1, False), (10, True)],
                         ids=["two-groups", "one-group", "frozen-body"])
def test_the_steps_are_torchs(device: str, head_lr_mult: float, frozen: bool) -> None:
    torch.manual_seed(0)
    ours = build_model(None, "xavier", CLASSES).to(device)
    if frozen:
        freeze_body(ours)
    theirs, initial = copy.deepcopy(ours), copy.deepcopy(ours)
    steps(ours, SGD(param_groups(ours, 0.01, head_lr_mult), weight_decay=1e-3), device)
    steps(theirs, torch.optim.SGD(param_groups(theirs, 0.01, head_lr_mult), lr=0.01, weight_decay=1e-3), device)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(ours.fc.weight, initial.fc.weight)  # the steps did something
    assert torch.equal(ours.conv1.weight, initial.conv1.weight) == frozen


def test_the_state_round_trips_and_must_match() -> None:
    model = build_model(None, "default", CLASSES)
    optimizer = SGD(param_groups(model, 0.01, 10), weight_decay=1e-3)
    state = optimizer.state_dict()
    assert [len(g["params"]) for g in state["param_groups"]] == [60, 2] and state["state"] == {}
    fresh = SGD(param_groups(model, 0.5, 10), weight_decay=0.0)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    with pytest.raises(ValueError, match="does not match"):
        SGD(param_groups(model, 0.01, 1), weight_decay=1e-3).load_state_dict(state)
