"""The seed's optimizer, plain SGD with weight decay, as torch's own update without
torch.optim.Optimizer around it.

Each of Optimizer's methods (the constructor's add_param_group, step, zero_grad, the state
dicts) imports torch._dynamo when first called: 1 to 2.6 s on a 2-core CPU, for a training
stage that runs a few seconds. `SGD.step` calls the same function torch.optim.SGD.step calls,
torch.optim.sgd.sgd, with the same arguments, so the steps are the same bit for bit
(tests/test_train.py checks it against torch.optim.SGD).
"""

from __future__ import annotations

import torch
from torch.optim.sgd import sgd


class SGD:
    """torch.optim.SGD(groups, weight_decay=...) with no momentum: what train() needs of it."""

    def __init__(self, groups: list[dict], weight_decay: float, fused: bool | None = None) -> None:
        self.param_groups = [{"params": list(g["params"]), "lr": g["lr"], "weight_decay": weight_decay}
                             for g in groups]
        # torch.optim.SGD's `fused`: None lets torch pick, as training does; benchmarks/step.py
        # measures True against it.
        self.fused = fused

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            # torch.optim.SGD.step's call, with its defaults: torch picks the same (foreach on
            # CUDA, a loop on the CPU) kernels for the same tensors.
            sgd(params, [p.grad for p in params], [None] * len(params), weight_decay=group["weight_decay"],
                momentum=0.0, lr=group["lr"], dampening=0.0, nesterov=False, maximize=False,
                has_sparse_grad=False, foreach=False if self.fused else None, fused=self.fused, grad_scale=None,
                found_inf=None)

    def zero_grad(self) -> None:
        """Drop the gradients, as Optimizer.zero_grad() does by default (set_to_none)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def state_dict(self) -> dict:
        """torch.optim.SGD's layout: no per-parameter state without momentum, and each group's
        settings with its parameters' indices."""
        groups, index = [], 0
        for group in self.param_groups:
            n = len(group["params"])
            groups.append({"lr": group["lr"], "weight_decay": group["weight_decay"],
                           "params": list(range(index, index + n))})
            index += n
        return {"state": {}, "param_groups": groups}

    def load_state_dict(self, state: dict) -> None:
        """Take the saved groups' settings; their parameters must be as many as ours."""
        saved = state["param_groups"]
        if [len(g["params"]) for g in saved] != [len(g["params"]) for g in self.param_groups] or state["state"]:
            raise ValueError("the saved optimizer state does not match this optimizer's parameter groups")
        for group, old in zip(self.param_groups, saved):
            group.update(lr=old["lr"], weight_decay=old["weight_decay"])
