"""The I/O shared by the two training stages, `finetune` and `scratch`, which differ only in
their params section: read the decoded images (and weights), train, write the outputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hotdog.errors import run_main
from hotdog.files import write_json
from hotdog.params import Paths, load_params

if TYPE_CHECKING:
    from hotdog import distributed
    from hotdog.resume import Snapshot


def params(run: str) -> tuple[str, ...]:
    """The params a training stage declares in dvc.yaml."""
    return ("seed", "train", run)


def outputs(paths: Paths, run: str) -> list[Path]:
    """What a training stage writes (tests/test_seams.py checks dvc.yaml declares the same)."""
    return [paths.checkpoint(run), paths.run_summary(run), paths.run_epochs(run)]


def main(run: str) -> None:
    """Train and write the outputs: here, or in train.devices processes started here (each
    runs `main` again, as one rank), or as one rank of a group torchrun started."""
    # torch and all that uses it are imported here, once the stage has said it started.
    from hotdog import distributed
    from hotdog.hardware import pick_device

    p = load_params(*params(run))
    processes = distributed.process_count(p.train.devices, pick_device(p.train.device))
    if distributed.launched():
        with distributed.process_group(pick_device(p.train.device)) as shard:
            train_and_write(run, p, shard)
    elif processes > 1:
        distributed.launch(processes, main, run)
    else:
        train_and_write(run, p, distributed.SINGLE)


def train_and_write(run: str, p, shard: distributed.Shard) -> None:
    from hotdog.checkpoint import load_state, save_checkpoint
    from hotdog.data import read_eval_views, read_train_images
    from hotdog.resume import ResumeStore, code_files, state_key
    from hotdog.train import train, trained_with

    run_params = getattr(p, run)
    inputs = [p.paths.decoded_file("train"), p.paths.decoded_file("test")]
    pretrained = None
    if run_params.pretrained:
        pretrained = load_state(p.paths.weights, f"weights file {p.paths.weights}", "run `dvc repro weights`")
        inputs.append(p.paths.weights)
    images = read_train_images(p.paths.decoded_file("train"), p.train.image_size, p.seed)
    store, start = None, None
    if p.runtime.resume:
        key = state_key(run, trained_with(run, p.seed, p.train, run_params), inputs + code_files())
        store = ResumeStore(p.paths.resume_states, run, key)
        start = store.load(quiet=not shard.main)
        if start is not None and shard.main:
            what = (f"resuming at epoch {start.epoch + 1}/{p.train.epochs}" if start.epoch < p.train.epochs
                    else f"all {p.train.epochs} epochs were done; writing the outputs")
            print(f"{run}: {what} from {store.path}, saved after epoch {start.epoch} "
                  "(runtime.resume: false starts over)", flush=True)

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
    save_checkpoint(p.paths.checkpoint(run), result.model.state_dict(), run, result.params, result.summary)
    write_json(p.paths.run_epochs(run), result.records)
    write_json(p.paths.run_summary(run), result.summary)
    if store is not None:
        store.clear()  # the outputs are complete; DVC records the stage next


def run_stage(run: str) -> None:
    """A training stage's __main__."""
    run_main(run, lambda: main(run))
