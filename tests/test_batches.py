"""How an epoch is cut into batches, so that BatchNorm always has more than one image to train
on (torch refuses one at small image sizes). Not `numeric`: nothing here depends on what the
CPU's kernels compute, so make test's ISA-capped reruns leave it out."""

import pytest
import torch
from conftest import write_params
from test_train import train_once

from hotdog.core.errors import StageError
from hotdog.data.augment import batch_bounds
from hotdog.training.distributed import Shard, share


@pytest.mark.parametrize("images, batch, world, sizes", [
    (256, 128, 1, [128, 128]), (257, 128, 1, [128, 129]), (258, 128, 1, [128, 128, 2]), (129, 128, 1, [129]),
    (5, 128, 1, [5]), (259, 128, 2, [128, 131]), (260, 128, 2, [128, 128, 4]), (1, 4, 1, [1]),
])
def test_a_last_batch_too_small_to_train_joins_the_one_before(images, batch, world, sizes):
    # BatchNorm should not train on one image, and each of `world` processes takes a share of
    # every batch (distributed.share): a rest that would leave any share at one image joins
    # the batch before it. Every image is in exactly one batch.
    bounds = batch_bounds(images, batch, world)
    assert [end - start for start, end in bounds] == sizes
    assert [i for start, end in bounds for i in range(start, end)] == list(range(images))
    shares = [len(share(torch.arange(start, end), Shard(rank, world))) for start, end in bounds[1:]
              for rank in range(world)]
    assert 1 not in shares


@pytest.mark.parametrize("augment", ["workers", "device"])
def test_a_last_batch_of_one_image_trains_in_the_batch_before_it(decoded_project, augment, capsys):
    # 12 train images at batch 11: the rest is one image, and BatchNorm in train mode raises
    # on one. It joins the batch before it, so the epoch is one step of all 12.
    write_params(decoded_project / "params.yaml", {"train.batch_size": 11, "train.augment": augment})
    summary, _ = train_once("scratch")
    assert summary["augment"] == augment
    assert "scratch epoch 1/1: batch 1/1" in capsys.readouterr().out


def test_a_batch_of_one_image_a_process_is_refused_where_torch_cannot_train_it(decoded_project):
    # At 32 px ResNet-18's last feature map is 1 x 1: one image gives its last BatchNorm one
    # value per channel, which torch refuses in train mode.
    write_params(decoded_project / "params.yaml", {"train.batch_size": 1})
    with pytest.raises(StageError, match=r"^train.batch_size is 1, which gives each of 1 process\(es\) one image a "
                                         r"step, and at train.image_size 32 ResNet-18's last BatchNorm then sees one "
                                         r"value per channel, which torch cannot train on; set train.batch_size to 2 or "
                                         r"more, or train.image_size to 33 or more, in params.yaml$"):
        train_once("scratch")
    # A frozen body's BatchNorm layers stay in eval mode, and at 40 px the last map is 2 x 2:
    # one image a step trains in both.
    write_params(decoded_project / "params.yaml", {"train.batch_size": 1, "finetune.freeze_body": True})
    train_once("finetune")
    write_params(decoded_project / "params.yaml", {"train.batch_size": 1, "train.image_size": 40})
    train_once("scratch")
