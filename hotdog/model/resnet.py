"""The network: torchvision's ResNet-18 with a head for the data set's classes, its param
groups, and a frozen body for training the head alone."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from hotdog.core.errors import StageError
from hotdog.core.names import imagenet_hotdog_fits, imagenet_hotdog_misfit
from hotdog.model.vision import resnet18

HEAD = "fc"
# ImageNet's class 934, n07697537 "hotdog, hot dog, red hot" (the seed's exercise 4; the
# MXNet edition of the book says 713, which is another class).
IMAGENET_HOTDOG = 934
IMAGENET_CLASSES = 1000


def build_model(pretrained: dict | None, head_init: str, classes: Sequence[str]) -> nn.Module:
    """ResNet-18, optionally with ImageNet weights, with fc replaced by Linear(512, N) for
    the N `classes` (label order)."""
    model = resnet18(weights=None)  # never torchvision's downloader: weights come verified
    if pretrained is not None:
        try:
            model.load_state_dict(pretrained)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise StageError(f"the weights file is not a torchvision ResNet-18 state dict ({first}); "
                             "check weights.url in params.yaml") from None
    imagenet_fc = model.fc
    model.fc = nn.Linear(model.fc.in_features, len(classes))
    if head_init == "xavier":
        nn.init.xavier_uniform_(model.fc.weight)
    elif head_init == "imagenet-hotdog":
        if pretrained is None:
            raise StageError("head_init imagenet-hotdog needs the ImageNet weights; set pretrained: true")
        weight, bias = imagenet_hotdog_head(imagenet_fc.weight.detach(), imagenet_fc.bias.detach(), classes)
        with torch.no_grad():
            model.fc.weight.copy_(weight)
            model.fc.bias.copy_(bias)
    return model


def imagenet_hotdog_head(weight: torch.Tensor, bias: torch.Tensor, classes: Sequence[str]
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-class head from ImageNet's 1000-class one, rows in the order of `classes`, which
    must be d2l's hotdog and not-hotdog.

    hotdog: ImageNet's row 934 as it is. not-hotdog: the mean of the other 999 rows, with
    ln 999 added to its bias. Its logit is then the mean of the other classes' logits plus
    ln 999, which is log-sum-exp over them when they are equal and a lower bound otherwise
    (Jensen), so the two-way softmax starts near ImageNet's P(hotdog) against the rest.
    """
    if not imagenet_hotdog_fits(classes):
        raise StageError(f"{imagenet_hotdog_misfit(classes)}; set head_init: xavier in params.yaml")
    if weight.shape[0] != IMAGENET_CLASSES or bias.shape != (IMAGENET_CLASSES,):
        raise StageError(f"head_init imagenet-hotdog needs ImageNet's 1000-class fc, but the weights "
                         f"file's fc.weight has shape {tuple(weight.shape)}; check weights.url in params.yaml")
    others = torch.ones(IMAGENET_CLASSES, dtype=torch.bool)
    others[IMAGENET_HOTDOG] = False
    rows = {"hotdog": (weight[IMAGENET_HOTDOG], bias[IMAGENET_HOTDOG]),
            "not-hotdog": (weight[others].mean(0), bias[others].mean() + math.log(others.sum().item()))}
    # The row order is the label order (sorted folder names, as ImageFolder's), looked up
    # by name rather than assumed.
    return (torch.stack([rows[name][0] for name in classes]), torch.stack([rows[name][1] for name in classes]))


def freeze_body(model: nn.Module) -> None:
    """Train the head alone: every parameter outside fc stops taking gradients."""
    for name, param in model.named_parameters():
        if not name.startswith(f"{HEAD}."):
            param.requires_grad_(False)


def train_mode(model: nn.Module) -> None:
    """model.train(), except that a frozen body's BatchNorm layers stay in eval mode.

    In train mode they would normalise with each batch's statistics and overwrite the
    running ones with the hotdog batches', so a body whose weights are frozen would still
    change what it computes.
    """
    model.train()
    if not model.conv1.weight.requires_grad:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not name.startswith(HEAD):
                module.eval()


def param_groups(model: nn.Module, lr: float, head_lr_mult: float) -> list[dict]:
    """The seed's groups: the head at lr x head_lr_mult, the body at lr; one group at 1x.
    A frozen body's parameters are left out, so only the head's group remains."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in trainable if n.startswith(f"{HEAD}.")]
    body = [p for n, p in trainable if not n.startswith(f"{HEAD}.")]
    if not body:
        return [{"params": head, "lr": lr * head_lr_mult}]
    if head_lr_mult == 1:
        return [{"params": [p for _, p in trainable], "lr": lr}]
    return [{"params": body, "lr": lr}, {"params": head, "lr": lr * head_lr_mult}]
