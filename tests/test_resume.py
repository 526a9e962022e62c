"""A killed training stage resumes where it stopped, and ends as if never stopped.

In-process here (the stage's main, stopped by an exception after an epoch is saved); through
the real `dvc repro` and `dvc exp run` with SIGKILL in tests/test_faults.py.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_params
from test_train import same_weights

from hotdog.core.params import load_params
from hotdog.training.resume import ResumeStore, Snapshot, state_key
from stages import _training

TIMING = ("examples_per_sec", "examples_per_sec_wall", "epoch_seconds", "train_seconds")


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after the raise runs in the stage."""


def outputs(run: str) -> tuple[dict, list[dict], dict]:
    p = load_params(*_training.params(run))
    summary = json.loads(p.paths.run_summary(run).read_text())
    epochs = json.loads(p.paths.run_epochs(run).read_text())
    return summary, epochs, torch.load(p.paths.checkpoint(run), weights_only=True)


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in TIMING}


def states(project) -> list[str]:
    folder = project / ".hotdog/resume"
    return sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []


def killed_after_epoch_1(project, monkeypatch, epochs: int) -> None:
    """Train `epochs` with the finetune stage and kill it once epoch 1 is saved."""
    write_params(project / "params.yaml", {"train.epochs": epochs})
    with monkeypatch.context() as m:
        kill_after_saving(m, 1)
        with pytest.raises(Killed):
            _training.main("finetune")


def kill_after_saving(monkeypatch, epochs_saved: int) -> None:
    saved = []
    original = ResumeStore.save

    def save(self, snapshot):
        original(self, snapshot)
        saved.append(snapshot.epoch)
        if len(saved) == epochs_saved:
            raise Killed

    monkeypatch.setattr(ResumeStore, "save", save)


@pytest.mark.numeric  # bit for bit
@pytest.mark.repeats  # against an uninterrupted run on the same kernels: no ISA-capped rerun
@pytest.mark.parametrize("run", ["finetune", "scratch"])
def test_a_killed_run_resumes_and_ends_as_an_uninterrupted_one(decoded_project, monkeypatch, capsys, run):
    write_params(decoded_project / "params.yaml", {"train.epochs": 3})
    _training.main(run)
    whole = outputs(run)
    assert states(decoded_project) == []  # removed once the outputs are written

    with monkeypatch.context() as m:
        kill_after_saving(m, 1)
        with pytest.raises(Killed):
            _training.main(run)
    assert len(states(decoded_project)) == 1
    capsys.readouterr()
    _training.main(run)
    log = capsys.readouterr().out
    assert f"{run}: resuming at epoch 2/3 from .hotdog/resume/{run}-" in log
    assert f"{run} epoch 1/3" not in log and f"{run} epoch 2/3: loss" in log
    resumed = outputs(run)

    assert untimed(resumed[0]) == untimed(whole[0])
    assert [untimed(r) for r in resumed[1]] == [untimed(r) for r in whole[1]]
    assert [r["epoch"] for r in resumed[1]] == [1, 2, 3]
    assert resumed[2]["params"] == whole[2]["params"]
    assert same_weights(resumed[2], whole[2])
    assert states(decoded_project) == []


def test_a_state_from_other_params_is_never_used(decoded_project, monkeypatch, capsys):
    killed_after_epoch_1(decoded_project, monkeypatch, 2)
    [old] = states(decoded_project)
    write_params(decoded_project / "params.yaml", {"train.epochs": 2, "finetune.lr": 1e-4})
    capsys.readouterr()
    _training.main("finetune")
    log = capsys.readouterr().out
    assert "resuming" not in log and "finetune epoch 1/2: loss" in log
    assert "removed 1 resumable state(s) saved with other params, inputs or code" in log
    assert states(decoded_project) == []


def test_a_state_from_another_setup_is_never_used(decoded_project, monkeypatch, capsys):
    # train.precision (or device, or devices) `auto` resolves by the machine: a state saved
    # where it meant bf16 must not go on where it means fp32 (a GPU run that died, resumed on
    # the CPU). The params are the same; here the resolution differs.
    from hotdog.training import stage as training_stage

    killed_after_epoch_1(decoded_project, monkeypatch, 2)
    real = training_stage.pick_precision
    monkeypatch.setattr(training_stage, "pick_precision",
                        lambda name, device: "fp32" if real(name, device) == "bf16" else "bf16")
    capsys.readouterr()
    _training.main("finetune")
    log = capsys.readouterr().out
    assert "resuming" not in log and "finetune epoch 1/2: loss" in log
    assert "removed 1 resumable state(s) saved with other params, inputs or code" in log


def test_a_state_from_other_data_is_never_used(decoded_project, monkeypatch, capsys):
    killed_after_epoch_1(decoded_project, monkeypatch, 2)
    # Two test images fewer (one split holds at most one corrupt file): another decoded
    # test split, so another key.
    from stages import decode, manifest

    for path in sorted((decoded_project / "data/hotdog/test/hotdog").iterdir())[:2]:
        path.unlink()
    manifest.main()
    decode.main()
    capsys.readouterr()
    _training.main("finetune")
    log = capsys.readouterr().out
    assert "resuming" not in log and "finetune epoch 1/2: loss" in log


def test_resume_off_starts_over_and_saves_nothing(decoded_project, monkeypatch, capsys):
    killed_after_epoch_1(decoded_project, monkeypatch, 2)
    write_params(decoded_project / "params.yaml", {"train.epochs": 2, "runtime.resume": False})
    capsys.readouterr()
    saves = []
    monkeypatch.setattr(ResumeStore, "save", lambda self, snapshot: saves.append(snapshot))
    _training.main("finetune")
    log = capsys.readouterr().out
    assert "resuming" not in log and "finetune epoch 1/2: loss" in log and saves == []


def test_a_run_killed_after_its_last_epoch_only_writes_the_outputs(decoded_project, monkeypatch, capsys):
    killed_after_epoch_1(decoded_project, monkeypatch, 1)
    capsys.readouterr()
    _training.main("finetune")
    log = capsys.readouterr().out
    assert "finetune: all 1 epochs were done; writing the outputs" in log
    assert "finetune epoch 1/1: loss" not in log
    summary, epochs, checkpoint = outputs("finetune")
    assert summary["epochs"] == 1 and [r["epoch"] for r in epochs] == [1]


def test_an_unreadable_state_is_dropped(decoded_project, monkeypatch, capsys):
    killed_after_epoch_1(decoded_project, monkeypatch, 2)
    [name] = states(decoded_project)
    (decoded_project / ".hotdog/resume" / name).write_bytes(b"torn")
    capsys.readouterr()
    _training.main("finetune")
    log = capsys.readouterr().out
    assert "ignoring the unreadable resumable state" in log and "finetune epoch 1/2: loss" in log


# ---------------------------------------------------------------- the store itself, in memory


def snapshot(epoch: int = 1) -> Snapshot:
    g = torch.Generator().manual_seed(epoch)
    return Snapshot(epoch, {"w": torch.randn(3, generator=g)}, {"state": {}, "param_groups": []},
                    [{"epoch": epoch, "loss": 0.5}], [[1.0, 2.0]], g.get_state())


def test_a_state_key_follows_params_and_input_bytes(tmp_path):
    data = tmp_path / "train.arrow"
    data.write_bytes(b"pixels")
    key = state_key("finetune", {"lr": 1e-4}, [data])
    assert key == state_key("finetune", {"lr": 1e-4}, [data, data])
    assert key != state_key("finetune", {"lr": 2e-4}, [data])
    assert key != state_key("scratch", {"lr": 1e-4}, [data])
    data.write_bytes(b"pixelz")
    assert key != state_key("finetune", {"lr": 1e-4}, [data])


def test_a_saved_snapshot_comes_back_bit_for_bit(tmp_path):
    ResumeStore(tmp_path, "finetune", "a" * 64).save(snapshot(2))
    back = ResumeStore(tmp_path, "finetune", "a" * 64).load()
    assert back.epoch == 2 and torch.equal(back.model["w"], snapshot(2).model["w"])
    assert torch.equal(back.rng, snapshot(2).rng) and back.records == snapshot(2).records


def test_a_store_drops_states_of_other_keys_and_unreadable_ones(tmp_path, capsys):
    ResumeStore(tmp_path, "finetune", "a" * 64).save(snapshot())
    ResumeStore(tmp_path, "scratch", "a" * 64).save(snapshot())
    assert ResumeStore(tmp_path, "finetune", "b" * 64).load() is None
    assert "finetune: removed 1 resumable state(s) saved with other params, inputs or code" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"scratch-{'a' * 16}.pt"]  # another run's: kept
    store = ResumeStore(tmp_path, "scratch", "a" * 64)
    store.path.write_bytes(b"torn")
    assert store.load() is None and not store.path.exists()
    assert "ignoring the unreadable resumable state" in capsys.readouterr().out
