"""Data-parallel training (hotdog.training.distributed) with gloo processes on the CPU."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from conftest import REPO, write_params
from servers import free_port
from synthetic import dataset_files, write_tree, write_weights
from torch import nn

from hotdog.core.errors import StageError
from hotdog.core.names import CLASSES
from hotdog.data.transforms import normalize
from hotdog.model.resnet import build_model
from hotdog.training import distributed
from hotdog.training.train import train_one_epoch

LR = 0.01
SIZE = 64  # layer4 is 2x2 here, so BatchNorm trains on a share of one image too


def global_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g), torch.arange(n) % 2


def fresh_model() -> nn.Module:
    torch.manual_seed(0)
    return build_model(None, "xavier", CLASSES).to(memory_format=torch.channels_last)


def _rank_steps(rank: int, world: int, port: int, sizes: list[int], out: str) -> None:
    """One process of the group: for each global batch size, a fresh model, its share of
    the global batch and one step through DDP. Rank 0 saves what came out."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    results = {}
    with distributed.process_group(cpu) as shard:
        for n in sizes:
            model = fresh_model()
            net = distributed.wrap(model, shard, cpu)
            x, y = global_batch(n)
            mine = distributed.share(torch.arange(n), shard)
            stats = train_one_epoch(model, [(x[mine], y[mine])], torch.optim.SGD(model.parameters(), lr=LR), cpu,
                                    "fp32", desc=None, net=net)
            results[str(n)] = {"state": model.state_dict(), "stats": list(stats)}
    if shard.main:
        torch.save(results, out)


def reference_step(n: int, world: int) -> tuple[nn.Module, float]:
    """What the group must do, by hand: each share through the model on its own (its own
    BatchNorm statistics), the summed-loss gradients of the shares added, one SGD step."""
    model = fresh_model()
    x, y = global_batch(n)
    grads = [torch.zeros_like(p) for p in model.parameters()]
    loss_sum = 0.0
    for part in torch.tensor_split(torch.arange(n), world):
        if len(part) == 0:
            continue
        twin = copy.deepcopy(model)
        twin.train()
        loss = nn.functional.cross_entropy(twin(normalize(x[part]).contiguous(memory_format=torch.channels_last)),
                                           y[part], reduction="sum")
        loss.backward()
        loss_sum += loss.item()
        for g, p in zip(grads, twin.parameters()):
            g += p.grad
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= LR * g
    return model, loss_sum


@pytest.fixture(scope="module")
def two_process_steps(tmp_path_factory) -> dict:
    """Rank 0's results of one step over 2 gloo processes, for global batches of 6 (3 + 3)
    and of 1 (1 + an empty share): one group of processes for both, since each start costs."""
    out = tmp_path_factory.mktemp("ddp") / "rank0.pt"
    mp.start_processes(_rank_steps, args=(2, free_port(), [6, 1], str(out)), nprocs=2, start_method="spawn")
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("n", [6, 1], ids=["three-each", "one-share-empty"])
def test_a_step_over_two_processes_sums_the_gradients_of_the_global_batch(two_process_steps, n):
    got = two_process_steps[str(n)]
    expected, loss_sum = reference_step(n, 2)
    start = fresh_model().state_dict()
    for name, param in expected.named_parameters():
        step, expected_step = got["state"][name] - start[name], param.detach() - start[name]
        # The steps are compared, not the weights. What must be told apart: a step half as
        # long (gradients averaged, DDP's default: 50% off) or one through whole-batch BN
        # (33% off for fc, 37% to 120% for the body, measured). Rounding alone moves them
        # far less, but not by nothing: a random ResNet's body gradients at 64 px cancel so
        # much that running the hand-made step on 1 thread instead of 2 moves the body's
        # steps by up to 2.6%, and fc's by 6e-6 (measured on a Zen 3). Hence 5%.
        error = ((step - expected_step).norm() / expected_step.norm()).item()
        assert error < 0.05, f"{name}: the step is {error:.1e} off"
        halved = ((step - expected_step / 2).norm() / (expected_step / 2).norm()).item()
        assert halved > 0.5
    examples, loss = got["stats"][2], got["stats"][0]
    assert examples == n and loss == pytest.approx(loss_sum, rel=1e-4)  # summed over processes


def test_process_count_and_shares():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert distributed.process_count("auto", cpu) == 1 and distributed.process_count(3, cpu) == 3
    assert distributed.process_count("auto", cuda) == max(1, torch.cuda.device_count())
    too_many = torch.cuda.device_count() + 1
    with pytest.raises(StageError, match=rf"^train.devices is {too_many}, but torch sees {too_many - 1} GPU\(s\); "):
        distributed.process_count(too_many, cuda)
    batch = torch.arange(5)
    shares = [distributed.share(batch, distributed.Shard(r, 2)).tolist() for r in range(2)]
    assert shares == [[0, 1, 2], [3, 4]]
    assert distributed.share(torch.arange(1), distributed.Shard(1, 2)).tolist() == []


def test_the_finetune_stage_trains_in_two_gloo_processes(tmp_path):
    project = tmp_path
    write_tree(project / "data", dataset_files({"train": 8, "test": 4}, corrupt=1))
    write_weights(project / "data/weights/resnet18.pth")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # Before decode: each process fails to read its input, and says so in one line, in the
    # words one process uses (it was elastic's 25-line traceback and "the error is above").
    write_params(project / "params.yaml", {"train.devices": 2})
    early = subprocess.run([sys.executable, "-m", "stages.finetune"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=600)
    assert early.returncode == 1 and early.stderr.strip().splitlines() == [
        "error: finetune: data/decoded/train.arrow is missing; run `dvc repro decode` first"], early.stderr
    summaries = {}
    for devices in (1, 2):
        write_params(project / "params.yaml", {"train.devices": devices})
        for stage in ("manifest", "decode", "finetune") if devices == 1 else ("finetune",):
            run = subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=project, env=env,
                                 capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stdout + run.stderr
        if devices == 2:
            assert "finetune: 16 train / 8 test images on cpu in 2 processes" in run.stdout
            assert run.stdout.count("finetune epoch 1/1: loss") == 1  # rank 0 alone reports
        summaries[devices] = json.loads((project / "metrics/finetune.json").read_text())
        checkpoint = torch.load(project / "models/finetune.pt", weights_only=True)
        build_model(None, "default", CLASSES).load_state_dict(checkpoint["state_dict"])  # a whole ResNet-18
        epochs = json.loads((project / "metrics/finetune_epochs.json").read_text())
        assert [e["epoch"] for e in epochs] == [1]
    assert summaries[1]["processes"] == 1 and summaries[2]["processes"] == 2
    assert summaries[1].keys() == summaries[2].keys()
    assert 0 <= summaries[2]["test_acc"] <= 1 and summaries[2]["loss"] > 0
    assert not (project / ".hotdog/resume").exists() or not list((project / ".hotdog/resume").iterdir())



def _listening(out: str) -> None:
    """A launched process: joins the group (as a training stage does, gloo on the CPU), then
    rank 0 writes the address of every TCP socket that the launcher or any of its processes
    listens on."""
    with distributed.process_group(torch.device("cpu")) as shard:
        distributed.all_sum([1.0], torch.device("cpu"))  # gloo has connected its pairs
        if shard.main:
            pids = [os.getppid(), *[int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == os.getppid()]]
            inodes = set()
            for pid in pids:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):  # an fd that closed meanwhile
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                        if target.startswith("socket:["):
                            inodes.add(target[len("socket:["):-1])
            found = []
            for table in ("/proc/net/tcp", "/proc/net/tcp6"):
                for line in open(table).read().splitlines()[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                        found.append(fields[1])
            with open(out, "w") as f:
                json.dump(found, f)
        distributed.all_sum([1.0], torch.device("cpu"))  # rank 1 waits until rank 0 has looked


def _parent(pid: int) -> int | None:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _hex_address(address: str) -> str:
    """/proc/net/tcp's local address (hex, little-endian words) without its port, as text."""
    import ipaddress

    host = bytes.fromhex(address.split(":")[0])
    words = b"".join(host[i:i + 4][::-1] for i in range(0, len(host), 4))
    return str(ipaddress.ip_address(words))


def test_the_processes_listen_on_loopback_alone(tmp_path, monkeypatch):
    # The launcher once used torch's elastic agent, whose stores listened on every interface
    # for the whole run, open to anyone on the network. The group now meets through a file,
    # and gloo listens on loopback. The file is in a temporary folder whose path has a space
    # and an accent: as a file:// URL, which torch does not decode, it made every process
    # wait five minutes for a file that never appeared.
    import tempfile

    (tmp_path / "tmp dir é").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp dir é"))
    out = tmp_path / "listening.json"
    distributed.launch(2, _listening, str(out))
    addresses = [_hex_address(a) for a in json.loads(out.read_text())]
    assert addresses, "gloo listens for its pairs: the check must see those sockets"
    assert all(a.startswith("127.") or a in ("::1", "::ffff:127.0.0.1") for a in addresses), addresses


def _fails_in_rank_one() -> None:
    if distributed.current().rank == 1:
        raise StageError("models/x.pt: no such file; run `dvc repro decode`")
    import time
    time.sleep(60)  # rank 0 would wait on rank 1 in a collective: it must be ended


def test_an_error_in_one_process_is_raised_in_its_own_words_and_ends_the_others():
    import time
    began = time.monotonic()
    with pytest.raises(StageError) as err:
        distributed.launch(2, _fails_in_rank_one)
    assert str(err.value) == "models/x.pt: no such file; run `dvc repro decode`"
    assert time.monotonic() - began < 45  # rank 0's minute of sleep was cut short
