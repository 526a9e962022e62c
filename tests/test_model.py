import pytest
import torch
from synthetic import write_weights
from torch import nn

from hotdog.checkpoint import load_state
from hotdog.errors import StageError
from hotdog.model import build_model, param_groups

pytestmark = pytest.mark.numeric  # rerun under AVX2 caps by make test


def test_pretrained_weights_are_loaded_and_the_head_replaced(tmp_path):
    write_weights(tmp_path / "w.pth", seed=3)
    state = load_state(tmp_path / "w.pth", f"weights file {tmp_path}/w.pth", "run `dvc repro weights`")
    model = build_model(state, "xavier")
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])
    assert isinstance(model.fc, nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 2)


def test_xavier_head_init_differs_from_default():
    torch.manual_seed(0)
    xavier = build_model(None, "xavier").fc.weight
    torch.manual_seed(0)
    default = build_model(None, "default").fc.weight
    bound = (6 / (512 + 2)) ** 0.5  # Xavier-uniform's bound for a 512 -> 2 layer
    assert xavier.abs().max() <= bound and not torch.equal(xavier, default)
    assert default.abs().max() <= 1 / 512**0.5  # nn.Linear's default bound


def test_wrong_state_dict_is_a_clear_error():
    with pytest.raises(StageError, match="not a torchvision ResNet-18 state dict"):
        build_model({"conv1.weight": torch.zeros(1)}, "xavier")


def test_load_state_refuses_bad_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(StageError, match=r"junk.pt cannot be loaded.*dvc repro weights"):
        load_state(tmp_path / "junk.pt", f"weights file {tmp_path}/junk.pt", "run `dvc repro weights`")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(StageError, match="holds a list, not a dict"):
        load_state(tmp_path / "list.pt", f"weights file {tmp_path}/list.pt", "run `dvc repro weights`")
    with pytest.raises(StageError, match="missing; run `dvc repro weights`"):
        load_state(tmp_path / "none.pt", f"weights file {tmp_path}/none.pt", "run `dvc repro weights`")


def test_weights_only_refuses_pickled_code(tmp_path):
    torch.save({"evil": nn.Linear(1, 1)}, tmp_path / "module.pt")  # a pickled module, not tensors
    with pytest.raises(StageError, match="cannot be loaded"):
        load_state(tmp_path / "module.pt", f"checkpoint {tmp_path}/module.pt", "run `dvc repro finetune`")


def test_param_groups_give_the_head_ten_times_the_lr():
    model = build_model(None, "xavier")
    body, head = param_groups(model, 5e-5, 10)
    assert head["lr"] == pytest.approx(5e-4) and body["lr"] == 5e-5
    assert {id(p) for p in head["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert len(body["params"]) + 2 == len(list(model.parameters()))
    (single,) = param_groups(model, 5e-4, 1)
    assert len(single["params"]) == len(list(model.parameters()))
