"""The seed's recipe exactly as d2l writes it (fine-tuning.md + d2l.train_ch13), without the
d2l package: ImageFolder, PIL transforms, a DataLoader with num_workers=0, fp32, summed loss.

Only what the seed leaves to d2l is written out here; comments mark every departure.
"""

from __future__ import annotations

import os
import time

import torch
import torchvision
from torch import nn


def seed_transforms(size: int = 224, resize: int = 256):
    """train_augs and test_augs, verbatim but for the size (224 and 256 in the seed)."""
    normalize = torchvision.transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_augs = torchvision.transforms.Compose([
        torchvision.transforms.RandomResizedCrop(size),
        torchvision.transforms.RandomHorizontalFlip(),
        torchvision.transforms.ToTensor(),
        normalize])
    test_augs = torchvision.transforms.Compose([
        torchvision.transforms.Resize([resize, resize]),
        torchvision.transforms.CenterCrop(size),
        torchvision.transforms.ToTensor(),
        normalize])
    return train_augs, test_augs


def finetune_net(state_dict: dict) -> nn.Module:
    """`resnet18(pretrained=True)` with the head replaced; the weights come from a file
    because torchvision's `pretrained=True` would download them."""
    net = torchvision.models.resnet18()
    net.load_state_dict(state_dict)
    net.fc = nn.Linear(net.fc.in_features, 2)
    nn.init.xavier_uniform_(net.fc.weight)
    return net


def accuracy(y_hat, y):
    """d2l.accuracy: the number of correct predictions."""
    return float((y_hat.argmax(axis=1).type(y.dtype) == y).type(y.dtype).sum())


def evaluate_accuracy_gpu(net, data_iter, device):
    """d2l.evaluate_accuracy_gpu."""
    net.eval()
    correct, total = 0.0, 0
    with torch.no_grad():
        for X, y in data_iter:
            X, y = X.to(device), y.to(device)
            correct += accuracy(net(X), y)
            total += y.numel()
    return correct / total


def train_batch_ch13(net, X, y, loss, trainer, device):
    """d2l.train_batch_ch13 on one device."""
    X, y = X.to(device), y.to(device)
    net.train()
    trainer.zero_grad()
    pred = net(X)
    l = loss(pred, y)
    l.sum().backward()
    trainer.step()
    return l.sum().detach(), accuracy(pred, y)  # detach: the same number, without a warning


def train_ch13(net, train_iter, test_iter, loss, trainer, num_epochs, device) -> dict:
    """d2l.train_ch13 on one device (d2l wraps the net in nn.DataParallel over all GPUs)."""
    net = net.to(device)
    step_seconds = wall_seconds = 0.0
    for epoch in range(num_epochs):
        metric = [0.0, 0.0, 0, 0]  # d2l.Accumulator(4): loss sum, correct, examples, labels
        wall_start = time.perf_counter()  # added: wall time includes data loading
        for features, labels in train_iter:
            start = time.perf_counter()  # d2l's timer.start(): after the batch is fetched
            l, acc = train_batch_ch13(net, features, labels, loss, trainer, device)
            if device.type == "cuda":
                torch.cuda.synchronize()  # added: d2l's .sum() later syncs implicitly
            metric = [metric[0] + float(l), metric[1] + acc, metric[2] + labels.shape[0],
                      metric[3] + labels.numel()]
            step_seconds += time.perf_counter() - start
        wall_seconds += time.perf_counter() - wall_start
        test_acc = evaluate_accuracy_gpu(net, test_iter, device)
    return {"loss": metric[0] / metric[2], "train_acc": metric[1] / metric[3], "test_acc": test_acc,
            "examples_per_sec": metric[2] * num_epochs / step_seconds,
            "examples_per_sec_wall": metric[2] * num_epochs / wall_seconds}


def train_fine_tuning(net, learning_rate, data_dir, device, batch_size=128, num_epochs=5,
                      param_group=True, size=224, resize=256) -> dict:
    """The seed's train_fine_tuning; returns d2l's printed figures and the wall rate."""
    train_augs, test_augs = seed_transforms(size, resize)
    train_iter = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(
        os.path.join(data_dir, 'train'), transform=train_augs),
        batch_size=batch_size, shuffle=True)
    test_iter = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(
        os.path.join(data_dir, 'test'), transform=test_augs),
        batch_size=batch_size)
    loss = nn.CrossEntropyLoss(reduction="none")
    if param_group:
        params_1x = [param for name, param in net.named_parameters()
                     if name not in ["fc.weight", "fc.bias"]]
        trainer = torch.optim.SGD([{'params': params_1x},
                                   {'params': net.fc.parameters(),
                                    'lr': learning_rate * 10}],
                                  lr=learning_rate, weight_decay=0.001)
    else:
        trainer = torch.optim.SGD(net.parameters(), lr=learning_rate,
                                  weight_decay=0.001)
    return train_ch13(net, train_iter, test_iter, loss, trainer, num_epochs, device)
