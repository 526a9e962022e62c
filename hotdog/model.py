"""The network: torchvision's ResNet-18 with a two-class head, and its param groups."""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18

from hotdog.errors import StageError

NUM_CLASSES = 2
HEAD = "fc"


def build_model(pretrained: dict | None, head_init: str) -> nn.Module:
    """ResNet-18, optionally with ImageNet weights, with fc replaced by Linear(512, 2)."""
    model = resnet18(weights=None)  # never torchvision's downloader: weights come verified
    if pretrained is not None:
        try:
            model.load_state_dict(pretrained)
        except RuntimeError as err:
            first = str(err).splitlines()[0]
            raise StageError(f"the weights file is not a torchvision ResNet-18 state dict ({first}); "
                             "check weights.url in params.yaml") from None
    model.fc = nn.Linear(model.fc.in_features, NUM_CLASSES)
    if head_init == "xavier":
        nn.init.xavier_uniform_(model.fc.weight)
    return model


def param_groups(model: nn.Module, lr: float, head_lr_mult: float) -> list[dict]:
    """The seed's groups: the head at lr x head_lr_mult, the body at lr; one group at 1x."""
    if head_lr_mult == 1:
        return [{"params": list(model.parameters()), "lr": lr}]
    head = [p for n, p in model.named_parameters() if n.startswith(f"{HEAD}.")]
    body = [p for n, p in model.named_parameters() if not n.startswith(f"{HEAD}.")]
    return [{"params": body, "lr": lr}, {"params": head, "lr": lr * head_lr_mult}]
