"""Data-parallel training over several processes (torch.distributed, DDP), as the seed's
nn.DataParallel spreads each batch over every GPU it finds.

- A training stage with train.devices > 1 starts its processes itself, through torch's
  elastic launcher (what `torchrun` runs), one per device: NCCL on CUDA, gloo on the CPU.
  Started by `torchrun` (several nodes), the processes exist already, and the stage joins them.
- Every process follows the same epoch plan and takes its share of each global batch of
  train.batch_size, cut as torch.tensor_split cuts it (sizes differ by at most one). A last
  batch that would give some process a single image joins the one before it
  (hotdog.data.augment.batch_bounds): BatchNorm would normalise it by its own statistics
  alone, and at small image sizes torch refuses to. A split smaller
  than the number of processes leaves some shares empty; ResNet's layers take an empty
  batch (zero gradients, BatchNorm's statistics untouched), so no special case.
- Gradients are SUMMED across processes by a communication hook, where DDP would average
  them: a step follows the gradient of the loss summed over the global batch, as on one
  device, so the learning rates keep their meaning.
- BatchNorm normalises each share with its own statistics, as DataParallel's replicas do,
  and the running statistics that are kept are rank 0's (DDP broadcasts them each step), as
  DataParallel keeps device 0's.
- Only rank 0 evaluates, saves the resumable state and writes the outputs.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Callable, Iterator, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from hotdog.core.errors import StageError, Stopped


class Shard(NamedTuple):
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the GPU it uses on its node

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Shard()


def process_count(devices: str | int, device: torch.device) -> int:
    """train.devices: `auto` is every visible GPU on CUDA and 1 on the CPU; N is N."""
    if devices == "auto":
        return max(1, torch.cuda.device_count()) if device.type == "cuda" else 1
    return devices


def launched() -> bool:
    """Whether this process is one of several started by a launcher (ours or torchrun)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def current() -> Shard:
    """This process's shard, from the variables the launcher sets."""
    if not launched():
        return SINGLE
    return Shard(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def launch(processes: int, entry: Callable, *args) -> None:
    """Run entry(*args) in `processes` processes on this machine, with torch's elastic
    launcher (rendezvous on a free loopback port), and wait for all of them."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"hotdog-{uuid.uuid4().hex}",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.5,
                          start_method="spawn")
    try:
        elastic_launch(config, entry)(*args)
    except SignalException as err:  # the launcher's own handler took Ctrl-C or SIGTERM
        raise Stopped(err.sigval) from None
    except ChildFailedError as err:
        ranks = ", ".join(str(rank) for rank in sorted(err.failures))
        raise StageError(f"training process(es) {ranks} of {processes} failed (the error is above); "
                         "fix it, or set train.devices: 1 in params.yaml to train in one process") from None


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Shard]:
    """Join the launched processes' group for the block: NCCL on CUDA, gloo on the CPU."""
    shard = current()
    if device.type == "cuda":
        torch.cuda.set_device(shard.local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield shard
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, shard: Shard) -> torch.device:
    """The device a process trains on: its own GPU on CUDA."""
    return torch.device("cuda", shard.local_rank) if device.type == "cuda" and shard.world > 1 else device


def sum_gradients(state, bucket):
    """DDP's all-reduce without its division by the number of processes: (state, a
    dist.GradBucket) -> a Future of the summed bucket. Unannotated on purpose: DDP checks a
    hook's annotations, and this module's are strings (`from __future__ import annotations`)."""
    work = dist.all_reduce(bucket.buffer(), async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


def wrap(model: nn.Module, shard: Shard, device: torch.device) -> nn.Module:
    """The module to train through: `model` itself in one process, else DDP over it."""
    if shard.world == 1:
        return model
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ddp.register_comm_hook(None, sum_gradients)
    return ddp


def share(batch: torch.Tensor, shard: Shard) -> torch.Tensor:
    """This process's part of a global batch (of indices, or of anything batched)."""
    return batch if shard.world == 1 else torch.tensor_split(batch, shard.world)[shard.rank]


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Each value summed over the processes (no-op in one process)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()
