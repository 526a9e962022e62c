"""A training stage's work: read the decoded images (and the weights), train with resume,
write the checkpoint and the metrics. `finetune` and `scratch` differ only in their params
section, so both stages call this with their run's name.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hotdog.core import events
from hotdog.core.declared import StageParams
from hotdog.core.files import write_json
from hotdog.core.params import load_params
from hotdog.data.augment import read_train_images
from hotdog.data.transforms import read_eval_views
from hotdog.model.checkpoint import load_state, save_checkpoint
from hotdog.model.hardware import device_starting, pick_device, pick_precision
from hotdog.training import distributed
from hotdog.training.resume import ResumeStore, Snapshot, code_files, state_key
from hotdog.training.train import train, trained_with


def train_stage(run: str, keys: tuple[str, ...]) -> None:
    """Train and write the outputs: here, or in train.devices processes started here (each
    runs this again, as one rank), or as one rank of a group torchrun started."""
    p = load_params(*keys)
    if distributed.launched():  # train.devices is the launcher's business then
        with distributed.process_group(pick_device(p.train.device)) as shard:
            train_and_write(run, p, shard)
    elif (processes := distributed.process_count(p.train.devices, pick_device(p.train.device))) > 1:
        distributed.launch(processes, train_stage, run, keys)
    else:
        train_and_write(run, p, distributed.SINGLE)


def train_and_write(run: str, p: StageParams, shard: distributed.Shard) -> None:
    """Train this process's share and, on rank 0, write the outputs."""
    run_params = getattr(p, run)
    inputs = [p.paths.decoded_file("train"), p.paths.decoded_file("test")]
    pretrained = None
    with device_starting(lambda: distributed.rank_device(pick_device(p.train.device), shard)):
        if run_params.pretrained:
            pretrained = load_state(p.paths.weights, f"weights file {p.paths.weights}", "run `dvc repro weights`")
            inputs.append(p.paths.weights)
        images = read_train_images(p.paths.decoded_file("train"), p.train.image_size, p.seed)
        store, start = resumable(run, p, shard, inputs)
    events.mark("ready")

    def on_epoch(snapshot: Snapshot) -> None:
        # The epochs so far are written after each one, so `dvc plots show` follows a long run.
        write_json(p.paths.run_epochs(run), snapshot.records)
        if store is not None:
            store.save(snapshot)

    # The test views are passed without a name here: train() moves them to the device, and
    # on a GPU no host copy should outlive that.
    result = train(run, p.seed, p.train, run_params, p.runtime.num_workers, pretrained, images,
                   read_eval_views(p.paths.decoded_file("test"), p.train.image_size)[0],
                   on_epoch=on_epoch, start=start, shard=shard)
    if not shard.main:
        return  # rank 0 writes the outputs
    events.mark("writing")
    save_checkpoint(p.paths.checkpoint(run), result.model.state_dict(), run, result.params, result.summary,
                    images.classes)
    write_json(p.paths.run_epochs(run), result.records)
    write_json(p.paths.run_summary(run), result.summary)
    if store is not None:
        store.clear()  # the outputs are complete; DVC records the stage next




def resumable(run: str, p: StageParams, shard: distributed.Shard, inputs: list[Path]
              ) -> tuple[ResumeStore | None, Snapshot | None]:
    """(the store this run saves its epochs in, the state to start from), both None when
    runtime.resume is off. A state is used only if it was saved with the same params, input
    bytes and code (hotdog.training.resume)."""
    if not p.runtime.resume:
        return None, None
    # What the params leave open goes in too: a state from a GPU run that died must not go on
    # on the CPU, in fp32, or in another number of processes (`auto` resolves differently).
    device = distributed.rank_device(pick_device(p.train.device), shard)
    setup = {"device": device.type, "precision": pick_precision(p.train.precision, device), "processes": shard.world,
             "torch": torch.__version__}
    key = state_key(run, {**trained_with(run, p.seed, p.train, getattr(p, run)), "setup": setup},
                    inputs + code_files())
    store = ResumeStore(p.paths.resume_states, run, key)
    start = store.load(quiet=not shard.main)
    if start is not None and shard.main:
        what = (f"resuming at epoch {start.epoch + 1}/{p.train.epochs}" if start.epoch < p.train.epochs
                else f"all {p.train.epochs} epochs were done; writing the outputs")
        print(f"{run}: {what} from {store.path}, saved after epoch {start.epoch} "
              "(runtime.resume: false starts over)", flush=True)
    return store, start
