import copy
import math
from pathlib import Path

import pytest
import torch
from synthetic import write_weights
from torch import nn
from torchvision.datasets import ImageFolder
from torchvision.models import resnet18

from hotdog.core.errors import StageError
from hotdog.core.names import CLASSES
from hotdog.data.layout import select
from hotdog.data.manifest import list_images
from hotdog.model.checkpoint import load_state
from hotdog.model.resnet import build_model, freeze_body, imagenet_hotdog_head, param_groups
from hotdog.training.train import train_one_epoch

pytestmark = pytest.mark.numeric  # rerun under AVX2 caps by make test


def test_pretrained_weights_are_loaded_and_the_head_replaced(tmp_path):
    write_weights(tmp_path / "w.pth", seed=3)
    state = load_state(tmp_path / "w.pth", f"weights file {tmp_path}/w.pth", "run `dvc repro weights`")
    model = build_model(state, "xavier", CLASSES)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"])
    assert isinstance(model.fc, nn.Linear) and (model.fc.in_features, model.fc.out_features) == (512, 2)


def test_xavier_head_init_differs_from_default():
    torch.manual_seed(0)
    xavier = build_model(None, "xavier", CLASSES).fc.weight
    torch.manual_seed(0)
    default = build_model(None, "default", CLASSES).fc.weight
    bound = (6 / (512 + 2)) ** 0.5  # Xavier-uniform's bound for a 512 -> 2 layer
    assert xavier.abs().max() <= bound and not torch.equal(xavier, default)
    assert default.abs().max() <= 1 / 512**0.5  # nn.Linear's default bound


def test_wrong_state_dict_is_a_clear_error():
    with pytest.raises(StageError, match="not a torchvision ResNet-18 state dict"):
        build_model({"conv1.weight": torch.zeros(1)}, "xavier", CLASSES)


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
    model = build_model(None, "xavier", CLASSES)
    body, head = param_groups(model, 5e-5, 10)
    assert head["lr"] == pytest.approx(5e-4) and body["lr"] == 5e-5
    assert {id(p) for p in head["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert len(body["params"]) + 2 == len(list(model.parameters()))
    (single,) = param_groups(model, 5e-4, 1)
    assert len(single["params"]) == len(list(model.parameters()))


def test_imagenet_hotdog_head_starts_from_class_934(tmp_path):
    write_weights(tmp_path / "w.pth", seed=5)
    state = load_state(tmp_path / "w.pth", "weights", "fix")
    model = build_model(state, "imagenet-hotdog", CLASSES)
    hot, other = CLASSES.index("hotdog"), CLASSES.index("not-hotdog")
    assert torch.equal(model.fc.weight[hot], state["fc.weight"][934])
    assert torch.equal(model.fc.bias[hot], state["fc.bias"][934])
    rest = torch.cat([torch.arange(934), torch.arange(935, 1000)])
    assert torch.allclose(model.fc.weight[other], state["fc.weight"][rest].mean(0))
    assert torch.allclose(model.fc.bias[other], state["fc.bias"][rest].mean() + math.log(999))
    assert torch.equal(model.conv1.weight, state["conv1.weight"])  # the body is ImageNet's


def test_the_label_order_is_imagefolders(tmp_path):
    # The seed labels its images with torchvision's ImageFolder; each file must get the same
    # label from the manifest, or a checkpoint's outputs and its metrics mean other classes.
    for name in ("not-hotdog", "hotdog"):  # made in this order: no listing may follow it
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in (2, 10, 1):
            (tmp_path / "train" / name / f"{i}.png").write_bytes(b"")  # ImageFolder opens none
    seed = ImageFolder(tmp_path / "train")
    theirs = {Path(path).relative_to(tmp_path).as_posix(): label for path, label in seed.samples}
    classes = select(["not-hotdog", "hotdog"], None, str(tmp_path))  # the manifest stage's label order
    assert {item.rel: item.label for item in list_images(tmp_path, classes, "train")} == theirs and len(theirs) == 6
    assert seed.class_to_idx == {name: label for label, name in enumerate(classes)}


def test_imagenet_hotdog_head_refuses_a_classifier_that_is_not_imagenets():
    state = build_model(None, "default", CLASSES).state_dict()
    model = resnet18(weights=None, num_classes=10)
    with pytest.raises(StageError, match=r"not a torchvision ResNet-18 state dict"):
        build_model(model.state_dict(), "imagenet-hotdog", CLASSES)
    with pytest.raises(StageError, match=r"needs ImageNet's 1000-class fc, but the weights file's fc.weight "
                                         r"has shape \(2, 512\); check weights.url"):
        imagenet_hotdog_head(state["fc.weight"], state["fc.bias"], CLASSES)
    with pytest.raises(StageError, match=r"^head_init imagenet-hotdog starts the head from ImageNet's hotdog class, "
                                         r"which fits the classes hotdog and not-hotdog only, not cat, dog, fox; "
                                         r"set head_init: xavier in params.yaml$"):
        imagenet_hotdog_head(state["fc.weight"], state["fc.bias"], ("cat", "dog", "fox"))
    with pytest.raises(StageError, match="needs the ImageNet weights"):
        build_model(None, "imagenet-hotdog", CLASSES)


def test_a_frozen_body_stays_bit_identical_while_fc_learns():
    torch.manual_seed(0)
    model = build_model(None, "xavier", CLASSES)
    freeze_body(model)
    before = copy.deepcopy(model.state_dict())
    groups = param_groups(model, 0.01, 10)
    assert len(groups) == 1 and {id(p) for p in groups[0]["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert groups[0]["lr"] == pytest.approx(0.1)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    train_one_epoch(model, [(x, torch.tensor([0, 1, 1, 0]))], torch.optim.SGD(groups, lr=0.01),
                    torch.device("cpu"), "fp32", desc="test")
    after = model.state_dict()
    body = [k for k in before if not k.startswith("fc.")]
    assert any(k.endswith("running_mean") for k in body)  # BN statistics are among them
    assert all(torch.equal(before[k], after[k]) for k in body)
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert model.layer1[0].bn1.training is False and model.training  # train mode, BN in eval


def test_an_unfrozen_model_updates_its_bn_statistics():
    torch.manual_seed(0)
    model = build_model(None, "xavier", CLASSES)
    before = model.bn1.running_mean.clone()
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    train_one_epoch(model, [(x, torch.tensor([0, 1, 1, 0]))], torch.optim.SGD(model.parameters(), lr=0.01),
                    torch.device("cpu"), "fp32", desc="test")
    assert not torch.equal(before, model.bn1.running_mean) and model.bn1.training
