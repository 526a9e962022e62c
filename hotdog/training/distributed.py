"""Data-parallel training over several processes (torch.distributed, DDP), as the seed's
nn.DataParallel spreads each batch over every GPU it finds.

- A training stage with train.devices > 1 starts its processes itself, one per device, with
  torch.multiprocessing: NCCL on CUDA, gloo on the CPU. They meet through a file, and talk
  over loopback, so nothing listens on the network (torch's elastic launcher, what `torchrun`
  runs, opens its stores on every interface). Started by `torchrun` (several nodes), the
  processes exist already, and the stage joins them.
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
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import torch
import torch.distributed as dist
from torch import nn

from hotdog.core.errors import StageError


class Shard(NamedTuple):
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the GPU it uses on its node

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Shard()

# Set by launch() in each process it starts: the file the group meets through.
STORE_ENV = "HOTDOG_DIST_STORE"


def process_count(devices: str | int, device: torch.device) -> int:
    """train.devices: `auto` is every visible GPU on CUDA and 1 on the CPU; N is N (on CUDA,
    no more than the GPUs torch sees)."""
    if devices == "auto":
        return max(1, torch.cuda.device_count()) if device.type == "cuda" else 1
    if device.type == "cuda" and devices > torch.cuda.device_count():
        raise StageError(f"train.devices is {devices}, but torch sees {torch.cuda.device_count()} GPU(s); set "
                         "train.devices to auto, or to that many or fewer (CUDA_VISIBLE_DEVICES may hide some)")
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
    """Run entry(*args) in `processes` processes on this machine, and wait for all of them.

    A StageError in any of them is raised here, in its own words, as one process would; any
    other failure ends the others and says which process failed and how."""
    import logging

    import torch.multiprocessing as mp
    from torch.multiprocessing.spawn import ProcessException

    # Its "Terminating process ... via signal SIGTERM" lines, when one process fails and the
    # others are ended, would only stand between the user and the error.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="hotdog-ddp-") as tmp:
        errors = Path(tmp, "errors")
        errors.mkdir()
        context = mp.start_processes(_rank, args=(processes, str(Path(tmp, "store")), str(errors), entry, args),
                                     nprocs=processes, start_method="spawn", join=False)
        try:
            while not context.join():
                pass
        except ProcessException as err:  # join() has ended the other processes
            said = sorted(errors.iterdir(), key=lambda f: int(f.name))
            if said:
                raise StageError(said[0].read_text()) from None
            raise StageError(_failure(err, context.error_files, processes)) from None
        finally:  # Ctrl-C, a SIGTERM or a lost run lock here: the processes go too
            _end(context.processes)
            for path in context.error_files:  # torch's, in the temporary folder of the system
                with contextlib.suppress(OSError):
                    os.unlink(path)


def _failure(err: Exception, error_files: list[str], processes: int) -> str:
    """Print each process's traceback (the first to fail may not be the first seen: the
    others then fail too, on a closed connection), and the line that says which failed."""
    import pickle

    failed = []
    for index, path in enumerate(error_files):
        with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError), open(path, "rb") as f:
            trace = pickle.load(f)
            print(f"training process {index} of {processes}: {trace.strip()}", file=sys.stderr)
            failed.append(index)
    how = (f"ended by {err.signal_name}" if getattr(err, "signal_name", None) else
           "failed (the traceback is above)" if err.error_index in failed else f"failed ({err})")
    first = f"training process {err.error_index} of {processes} {how}"  # the first seen to end
    if failed and failed != [err.error_index]:
        others = ", ".join(map(str, (i for i in failed if i != err.error_index)))
        first += f", and process(es) {others} failed (the traceback is above)"
    elif failed:
        first = f"training process {err.error_index} of {processes} failed (the traceback is above)"
    return f"{first}; fix it, or set train.devices: 1 in params.yaml to train in one process"


def _rank(index: int, world: int, store: str, errors: str, entry: Callable, args: tuple) -> None:
    """One process that launch() started: its place in the group, then entry(*args). A
    StageError's message goes to `errors`/<rank> for launch() to raise."""
    os.environ.update(RANK=str(index), WORLD_SIZE=str(world), LOCAL_RANK=str(index), LOCAL_WORLD_SIZE=str(world))
    os.environ[STORE_ENV] = store
    # Loopback: gloo and NCCL otherwise take the address the host name resolves to, often
    # the machine's LAN address, and listen there for the whole run.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    try:
        entry(*args)
    except StageError as err:
        Path(errors, str(index)).write_text(str(err))
        sys.exit(1)


def _end(processes: list, seconds: float = 10.0) -> None:
    """SIGTERM to each process still running, then SIGKILL to any left `seconds` later."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[Shard]:
    """Join the launched processes' group for the block: NCCL on CUDA, gloo on the CPU."""
    shard = current()
    if device.type == "cuda":
        torch.cuda.set_device(shard.local_rank)
    store = os.environ.get(STORE_ENV)  # else torchrun's env:// variables say where to meet
    # A FileStore itself, not a file:// URL: torch does not decode one, so a temporary folder
    # with a space in its path would make every process wait for a file that never appears.
    where = dict(store=dist.FileStore(store, shard.world), rank=shard.rank, world_size=shard.world) if store else {}
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", **where)
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
