import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from stages import data
from stages.data import ManifestDataset, load_rgb, make_loader, sample_crop, sample_seed, train_view
from stages.params import load_params
from stages.schema import MANIFEST, read_table

NORMALIZE = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def seed_train_augs(size):
    """The seed's train_augs, verbatim but for the size."""
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), NORMALIZE])


def seed_test_augs(size, resize):
    return T.Compose([T.Resize([resize, resize]), T.CenterCrop(size), T.ToTensor(), NORMALIZE])


def photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (224, 224), (40, 600), (600, 40), (3, 3)])
def test_crop_draws_match_torchvision(shape):
    # Includes shapes where all ten tries fail and the centre-crop fallback runs.
    for s in range(50):
        torch.manual_seed(s)
        expected = T.RandomResizedCrop.get_params(torch.empty(3, *shape), (0.08, 1.0), (3 / 4, 4 / 3))
        assert sample_crop(*shape, torch.Generator().manual_seed(s)) == tuple(expected)


def test_train_view_is_the_seeds_transform():
    img = photo(120, 90)
    for s in range(10):
        torch.manual_seed(s)
        expected = seed_train_augs(48)(img)
        got = train_view(img, 48, torch.Generator().manual_seed(s))
        assert torch.equal(got, expected)


def test_test_view_is_the_seeds_transform():
    img = photo(120, 90)
    assert torch.equal(data.test_view(img, 224, 256), seed_test_augs(224, 256)(img))
    assert data.test_view(img, 32, 37).shape == (3, 32, 32)


def test_sample_seed_separates_epochs_and_images():
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(100)}
    assert len(seeds) == 300
    assert sample_seed(1, 0, 0) != sample_seed(0, 0, 0) and sample_seed(0, 0, 0) == sample_seed(0, 0, 0)


def test_every_mode_loads_as_rgb(tiny_project):
    from stages.manifest import build_manifest

    p = load_params("manifest", "train")
    build_manifest(p.manifest, p.paths, workers=1)
    table = read_table(p.paths.manifest_file("train"), MANIFEST, "manifest")
    for rel in table.column("path").to_pylist():
        assert load_rgb(p.paths.images / rel).mode == "RGB"


def test_augmentation_is_fixed_by_seed_not_workers(tiny_project):
    from stages.manifest import build_manifest

    p = load_params("manifest", "train")
    build_manifest(p.manifest, p.paths, workers=1)
    table = read_table(p.paths.manifest_file("train"), MANIFEST, "manifest")

    def batches(workers, epoch, seed=0):
        ds = ManifestDataset(table, p.paths.images, p.train.model_copy(update={"num_workers": workers}), seed)
        ds.set_epoch(epoch)
        return [x for x, _ in make_loader(ds, ds_params(workers), shuffle_seed=seed)]

    def ds_params(workers):
        return p.train.model_copy(update={"num_workers": workers})

    one, two = batches(0, 1), batches(2, 1)
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert not torch.equal(torch.cat(one), torch.cat(batches(0, 2)))
    assert not torch.equal(torch.cat(one), torch.cat(batches(0, 1, seed=1)))
