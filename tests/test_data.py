import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

from stages import data
from stages.data import (
    IMAGENET_STD,
    DecodedImages,
    make_loader,
    normalize,
    sample_crop,
    sample_seed,
    train_view,
)
from stages.decode import decode_image
from stages.errors import StageError
from stages.params import load_params
from stages.schema import DECODED, MANIFEST, read_arrow, read_table

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


ONE_LEVEL = 1 / 255 / min(IMAGENET_STD) + 1e-6  # one uint8 step, after normalisation


def test_train_view_is_the_seeds_transform():
    # Same draws, nearly the same pixels: torchvision's uint8 tensor resampling differs
    # from PIL's by at most one level, in under 2% of the values (here, on pure noise).
    img = photo(120, 90)
    for s in range(10):
        torch.manual_seed(s)
        expected = seed_train_augs(48)(img)
        got = normalize(train_view(F.pil_to_tensor(img), 48, torch.Generator().manual_seed(s))[None])[0]
        diff = (got - expected).abs()
        assert diff.max() <= ONE_LEVEL and (diff > 1e-5).float().mean() < 0.02


def test_test_view_is_the_seeds_transform():
    img = photo(120, 90)
    got = normalize(data.test_view(F.pil_to_tensor(img), 224, 256)[None])[0]
    diff = (got - seed_test_augs(224, 256)(img)).abs()
    assert diff.max() <= ONE_LEVEL and (diff > 1e-5).float().mean() < 0.02
    assert data.test_view(F.pil_to_tensor(img), 32, 37).shape == (3, 32, 32)


def test_decoded_images_give_the_seeds_test_view_within_a_level(tmp_path):
    # The decode stage resizes once (shorter side 256); the test view then squashes that.
    # Resampling twice moves pixels a little; the stated tolerance is a mean of 1 and a
    # maximum of 8 levels out of 255 (measured here: 0.2 and 2 on a 500x375 image).
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(tmp_path / "photo.png")
    original = Image.open(tmp_path / "photo.png").convert("RGB")
    h, w, pixels = decode_image(tmp_path / "photo.png", 256)
    assert min(h, w) == 256 and (h, w) == (256, 341)
    cached = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)
    expected = F.pil_to_tensor(F.center_crop(F.resize(original, [256, 256], antialias=True), [224, 224]))
    diff = (data.test_view(cached, 224, 256).int() - expected.int()).abs().float()
    assert diff.mean() <= 1 and diff.max() <= 8


def test_sample_seed_separates_epochs_and_images():
    seeds = {sample_seed(0, e, i) for e in range(3) for i in range(100)}
    assert len(seeds) == 300
    assert sample_seed(1, 0, 0) != sample_seed(0, 0, 0) and sample_seed(0, 0, 0) == sample_seed(0, 0, 0)


def decoded(project):
    """Run the manifest and decode stages in the tiny project; the train split's table."""
    from stages import decode
    from stages.manifest import build_manifest

    p = load_params("manifest", "train")
    build_manifest(p.manifest, p.paths, workers=1)
    decode.main()
    return p, read_arrow(p.paths.decoded_file("train"), DECODED, "decode")


def test_decode_stage_keeps_manifest_order_and_every_mode(tiny_project):
    p, table = decoded(tiny_project)
    manifest = read_table(p.paths.manifest_file("train"), MANIFEST, "manifest")
    assert table.column("path").to_pylist() == manifest.column("path").to_pylist()
    assert table.column("label").to_pylist() == manifest.column("label").to_pylist()
    resize = p.train.test_resize
    for h, w, blob in zip(table.column("height").to_pylist(), table.column("width").to_pylist(),
                          table.column("pixels").to_pylist()):
        assert min(h, w) == resize and len(blob) == h * w * 3  # grey, CMYK... all RGB now


def test_augmentation_is_fixed_by_seed_not_workers(tiny_project):
    p, table = decoded(tiny_project)

    def batches(workers, epoch, seed=0):
        params = p.train.model_copy(update={"num_workers": workers})
        ds = DecodedImages(table, params, seed)
        ds.set_epoch(epoch)
        return [x for x, _ in make_loader(ds, params, shuffle_seed=seed)]

    one, two = batches(0, 1), batches(2, 1)
    assert one[0].dtype == torch.uint8 and one[0].shape[1:] == (3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert not torch.equal(torch.cat(one), torch.cat(batches(0, 2)))
    assert not torch.equal(torch.cat(one), torch.cat(batches(0, 1, seed=1)))


def png_with_bad_pixels() -> bytes:
    """A PNG whose IDAT is not a zlib stream but carries a correct CRC: only decoding finds it."""
    buf = io.BytesIO()
    photo(40, 30).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4:at])[0]
    data[at + 4:at + 4 + length] = bytes(length)  # zeros: an invalid zlib header
    data[at + 4 + length:at + 8 + length] = struct.pack(">I", zlib.crc32(data[at:at + 4 + length]))
    return bytes(data)


def test_an_image_that_passes_the_manifest_but_does_not_decode_is_named(tiny_project):
    from stages import decode, manifest

    manifest.main()
    bad = tiny_project / "data/hotdog/train/hotdog/0.png"
    bad.write_bytes(png_with_bad_pixels())
    assert manifest.probe_image(tiny_project / "data/hotdog", "train/hotdog/0.png", 0).row is not None
    with pytest.raises(StageError, match=r"data/hotdog/train/hotdog/0.png passed the manifest's check but does "
                                         r"not decode \(.*\); replace it in the data set"):
        decode.main()
    assert not (tiny_project / "data/decoded/train.arrow").exists()
