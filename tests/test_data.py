import io
import math
import struct
import warnings
import zlib

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as F

from hotdog.core.errors import StageError
from hotdog.core.params import load_params
from hotdog.core.schema import DECODED, MANIFEST, read_arrow, read_table
from hotdog.data import augment as data
from hotdog.data.augment import DecodedImages, ResidentBatches, WorkerBatches, plan_epoch, resized_crops, train_view
from hotdog.data.decode import decode_image, rgb_pixels
from hotdog.data.sizes import eval_resize
from hotdog.data.transforms import IMAGENET_STD, eval_view, normalize

pytestmark = pytest.mark.numeric  # rerun under AVX2 caps by make test

NORMALIZE = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def seed_train_augs(size):
    """The seed's train_augs, verbatim but for the size."""
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), NORMALIZE])


def seed_test_augs(size, resize):
    return T.Compose([T.Resize([resize, resize]), T.CenterCrop(size), T.ToTensor(), NORMALIZE])


def photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


class Uniforms:
    """Stands in for torch.empty and torch.randint inside torchvision's get_params, feeding
    it given uniforms in the float32 steps torch's own uniform_ takes."""

    def __init__(self, u_scale, u_ratio, u_top, u_left):
        self.draws = [u for pair in zip(u_scale.tolist(), u_ratio.tolist()) for u in pair]
        self.ints = [u_top, u_left]

    def empty(self, *size):
        feed = self

        class Empty:
            def uniform_(self, a, b):
                a, b = torch.tensor(float(a)), torch.tensor(float(b))
                return a + torch.tensor(feed.draws.pop(0)) * (b - a)
        return Empty()

    def randint(self, low, high, size):
        return torch.tensor([low + int(math.floor(self.ints.pop(0) * (high - low)))])


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (224, 224), (40, 600), (600, 40), (3, 3)])
def test_crop_boxes_are_torchvisions_get_params(shape, monkeypatch):
    # The batched draw takes the same steps as torchvision's one-image loop, given the
    # same uniforms; the shapes include ones where all ten tries fail and the centre crop runs.
    n = 200
    g = torch.Generator().manual_seed(0)
    u_scale, u_ratio = torch.rand(n, data.CROP_TRIES, generator=g), torch.rand(n, data.CROP_TRIES, generator=g)
    u_top, u_left = torch.rand(n, generator=g).double(), torch.rand(n, generator=g).double()
    heights, widths = torch.full((n,), shape[0]), torch.full((n,), shape[1])
    got = data.crop_boxes(heights, widths, u_scale, u_ratio, u_top, u_left)
    image = torch.empty(3, *shape)
    for k in range(n):
        feed = Uniforms(u_scale[k], u_ratio[k], float(u_top[k]), float(u_left[k]))
        with monkeypatch.context() as m:
            m.setattr(torch, "empty", feed.empty)
            m.setattr(torch, "randint", feed.randint)
            expected = T.RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3))
        assert tuple(got[k].tolist()) == tuple(expected)


def test_epoch_plans_are_fixed_by_seed_and_epoch():
    heights, widths = torch.randint(20, 400, (500,)), torch.randint(20, 400, (500,))
    plan = plan_epoch(0, 1, heights, widths)
    assert sorted(plan.order.tolist()) == list(range(500))
    top, left, h, w = plan.boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (h > 0).all() and (w > 0).all()
    assert (top + h <= heights).all() and (left + w <= widths).all()
    assert 0.4 < plan.flips.float().mean() < 0.6
    again = plan_epoch(0, 1, heights, widths)
    assert all(torch.equal(a, b) for a, b in zip(plan, again))
    for other in (plan_epoch(0, 2, heights, widths), plan_epoch(1, 1, heights, widths)):
        assert not torch.equal(other.order, plan.order) and not torch.equal(other.boxes, plan.boxes)


ONE_LEVEL = 1 / 255 / min(IMAGENET_STD) + 1e-6  # one uint8 step, after normalisation
# torchvision resizes uint8 tensors with one of two ATen kernels, chosen by the CPU: with
# ATen's AVX2 capability, PIL's own fixed-point arithmetic (measured on noise: under 2% of
# values one level from PIL, the test view exact); otherwise (ATEN_CPU_CAPABILITY=default
# here, and the generic path AVX-512 builds take) float weights, 16-20% one level off.
# What the tests must tell apart is a wrong crop, flip, size or filter, which moves most
# values by many levels, and a resize that truncates instead of rounding, which puts about
# half the values a level low. Hence: at most one level, and under a third of values off.
ROUNDING_SHARE = 1 / 3


def within_rounding(got: torch.Tensor, expected: torch.Tensor) -> bool:
    """Normalised images that differ by resampling's rounding only (see ROUNDING_SHARE)."""
    diff = (got - expected).abs()
    return bool(diff.max() <= ONE_LEVEL and (diff > 1e-5).float().mean() < ROUNDING_SHARE)


def test_train_view_is_the_seeds_transform():
    # Same draws, the same pixels but for rounding (pure noise, the hardest case).
    img = photo(120, 90)
    for s in range(10):
        torch.manual_seed(s)
        expected = seed_train_augs(48)(img)
        torch.manual_seed(s)  # the same draws again: the crop's, then the flip's
        box = torch.tensor(T.RandomResizedCrop.get_params(F.pil_to_tensor(img), (0.08, 1.0), (3 / 4, 4 / 3)))
        flip = bool(torch.rand(1) < 0.5)
        got = normalize(train_view(F.pil_to_tensor(img), box, flip, 48)[None])[0]
        assert within_rounding(got, expected)
        assert not within_rounding(got.flip(-1), expected)  # a wrong flip is caught


def test_normalize_makes_its_constants_once_per_device_and_they_serve_autograd_later():
    # Made per call, they were a blocking host-to-device copy in every training step on CUDA.
    from hotdog.data import transforms

    transforms._STATS.clear()
    batch = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    with torch.inference_mode():  # first made where evaluation makes them
        first = normalize(batch)
    assert list(transforms._STATS) == [batch.device]
    weight = torch.ones(3, 1, 1, requires_grad=True)  # later, a step that needs autograd
    (normalize(batch) * weight).sum().backward()
    assert weight.grad is not None and len(transforms._STATS) == 1
    assert torch.equal(normalize(batch), first)
    mean, std = transforms.imagenet_stats()
    assert torch.equal(first, (batch.float() / 255 - mean) / std)


def test_test_view_is_the_seeds_transform():
    img = photo(120, 90)
    got = normalize(eval_view(F.pil_to_tensor(img), 224)[None])[0]
    assert within_rounding(got, seed_test_augs(224, 256)(img))
    assert not within_rounding(got, seed_test_augs(224, 260)(img))  # a resize 4 px off is caught
    assert eval_view(F.pil_to_tensor(img), 32).shape == (3, 32, 32)


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (64, 64), (37, 91), (299, 300), (48, 37)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_the_decode_resize_is_torchvisions(size, mode):
    # hotdog.data.decode resizes with PIL itself, so that its stage needs no torch; it must give
    # exactly what torchvision's resize of the PIL image gives, sizes and rounding included.
    rng = np.random.default_rng(size[0] * size[1])
    img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    for short_side in (32, 37, 48, 256):
        expected = np.asarray(F.resize(img.convert("RGB"), short_side, antialias=True), dtype=np.uint8)
        got = rgb_pixels(img, short_side)
        assert got.shape == expected.shape and np.array_equal(got, expected), (short_side, got.shape)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_decodes_as_its_top_8_bits_not_white(tmp_path, fmt):
    # Scanners, microscopes and medical imaging write 16-bit grey. Pillow's convert("RGB")
    # clips such values at 255: the photo came out white, in training and in predict alike.
    rng = np.random.default_rng(0)
    deep = rng.integers(0, 65536, (30, 40), dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / f"deep.{fmt.lower()}", fmt)
    Image.fromarray((deep >> 8).astype(np.uint8), "L").save(tmp_path / "shallow.png")
    with Image.open(tmp_path / f"deep.{fmt.lower()}") as img:
        assert img.mode.startswith("I;16")
        got = rgb_pixels(img, 37)
    with Image.open(tmp_path / "shallow.png") as img:
        assert np.array_equal(got, rgb_pixels(img, 37))
    assert 100 < got.mean() < 155  # uniform noise: about 127, where white is 255


def test_an_image_too_long_and_thin_is_refused_before_decoding():
    with pytest.raises(ValueError, match=r"^1 x 51 px: its longer side is 51.0 times its shorter, more than the 50 "
                                         r"an image may have; crop it to the part to classify$"):
        rgb_pixels(Image.new("RGB", (1, 51)), 256)
    assert rgb_pixels(Image.new("RGB", (50, 1)), 32).shape == (32, 1600, 3)


# EXIF orientation -> how the stored pixels were turned from the upright photo (the
# inverse of what a viewer applies; 2, 3, 4, 5 and 7 are their own inverses).
STORED_AS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_photo_stored_sideways_with_its_orientation_tag_decodes_upright(tmp_path, fmt):
    # A phone stores a portrait photo as its sensor read it, with an EXIF tag that viewers and
    # browsers apply; decoding, `hotdog predict` and the report's thumbnails apply it too.
    from hotdog.evaluation.report import load_thumbnail
    from hotdog.serving.predict import test_view

    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)).resize((48, 72), Image.NEAREST)
    photo.save(tmp_path / f"upright.{fmt}", fmt, quality=100)
    with Image.open(tmp_path / f"upright.{fmt}") as img:
        expected = rgb_pixels(img, 32)
    assert expected.shape == (48, 32, 3)
    for orientation, turned in STORED_AS.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"tagged-{orientation}.{fmt}"
        photo.transpose(turned).save(path, fmt, exif=exif, quality=100)
        assert Image.open(path).getexif()[0x0112] == orientation
        h, w, pixels = decode_image(path, 32)
        got = np.frombuffer(pixels, np.uint8).reshape(h, w, 3)
        # A JPEG's blocks fall elsewhere once turned, so its pixels agree within its loss.
        assert got.shape == expected.shape, orientation
        assert np.abs(got.astype(int) - expected).mean() < (0.5 if fmt == "PNG" else 4), orientation
        upright_view = test_view((tmp_path / f"upright.{fmt}").read_bytes(), 32)
        assert (test_view(path.read_bytes(), 32).int() - upright_view.int()).abs().float().mean() < 4, orientation
        assert load_thumbnail(path).size == load_thumbnail(tmp_path / f"upright.{fmt}").size == photo.size
    # Without the tag, or with a damaged EXIF block, nothing is turned and nothing is lost.
    photo.transpose(STORED_AS[6]).save(tmp_path / "plain.png")
    assert decode_image(tmp_path / "plain.png", 32)[:2] == (32, 48)
    damaged = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff"  # cut short
    photo.transpose(STORED_AS[6]).save(tmp_path / "damaged.jpg", "JPEG", exif=damaged)
    # A readable orientation beside a malformed tag (the camera's Make, meant as text, written
    # as a number), on which Pillow's exif_transpose fails as it rewrites the block: turned.
    ifd = (struct.pack(">H", 2) + struct.pack(">HHII", 0x010F, 5, 1, 38) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
           + struct.pack(">I", 0))
    odd_make = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + ifd + struct.pack(">II", 2, 3)
    photo.transpose(STORED_AS[6]).save(tmp_path / "odd-make.png", exif=odd_make)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns of the damage
        assert decode_image(tmp_path / "damaged.jpg", 32)[:2] == (32, 48)
        assert Image.open(tmp_path / "odd-make.png").getexif()[0x0112] == 6
        h, w, pixels = decode_image(tmp_path / "odd-make.png", 32)
        got = np.frombuffer(pixels, np.uint8).reshape(h, w, 3)
        assert got.shape == expected.shape and np.abs(got.astype(int) - expected).mean() < (0.5 if fmt == "PNG" else 4)
        assert load_thumbnail(tmp_path / "odd-make.png").size == photo.size


def smooth_photo_and_its_decoded_copy(tmp_path, size):
    """A smooth photo of `size` (w, h) saved as PNG, and the decode stage's copy of it (CHW)."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(small).resize(size, Image.BICUBIC).save(tmp_path / "photo.png")
    original = Image.open(tmp_path / "photo.png").convert("RGB")
    h, w, pixels = decode_image(tmp_path / "photo.png", 256)
    assert (h, w) == (256, 341)  # both sizes used here are about 4:3
    return original, torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1)


def test_decoded_images_give_the_seeds_test_view_within_a_level(tmp_path):
    # The decode stage resizes once (shorter side 256); the test view then squashes that.
    # Resampling twice moves pixels a little; the stated tolerance is a mean of 1 and a
    # maximum of 8 levels out of 255 (measured here: 0.2 and 2 on a 500x375 image).
    original, cached = smooth_photo_and_its_decoded_copy(tmp_path, (500, 375))
    expected = F.pil_to_tensor(F.center_crop(F.resize(original, [256, 256], antialias=True), [224, 224]))
    diff = (eval_view(cached, 224).int() - expected.int()).abs().float()
    assert diff.mean() <= 1 and diff.max() <= 8


def test_decoded_images_give_the_seeds_train_view_within_tolerance(tmp_path):
    # The seed crops the original; training crops the decode stage's copy (shorter side
    # 256). An original of exactly twice that size and crop boxes of even numbers make the
    # two crops cover the same region, so only resampling twice differs. Stated
    # tolerance: a mean of 1 and a maximum of 12 levels (measured: 0.71 and 9, 50 draws).
    # Off this grid a box also moves by up to half a pixel of the copy; that changes where
    # the crop falls, not how faithful it is, and is as random as the crop itself.
    original, cached = smooth_photo_and_its_decoded_copy(tmp_path, (682, 512))
    for s in range(50):
        torch.manual_seed(s)
        box = [v // 2 for v in T.RandomResizedCrop.get_params(original, (0.08, 1.0), (3 / 4, 4 / 3))]
        flip = bool(torch.rand(1) < 0.5)
        top, left, bh, bw = (2 * v for v in box)
        expected = F.pil_to_tensor(F.resized_crop(original, top, left, bh, bw, [224, 224], antialias=True))
        expected = expected.flip(-1) if flip else expected
        diff = (train_view(cached, torch.tensor(box), flip, 224).int() - expected.int()).abs().float()
        assert diff.mean() <= 1 and diff.max() <= 12


def decoded(project):
    """Run the manifest and decode stages in the tiny project; the train split's table."""
    from stages import decode, manifest

    manifest.main()
    decode.main()
    p = load_params("train")
    return p, read_arrow(p.paths.decoded_file("train"), DECODED, "decode")


def test_decode_stage_keeps_manifest_order_and_every_mode(tiny_project):
    p, table = decoded(tiny_project)
    manifest = read_table(p.paths.manifest_file("train"), MANIFEST, "manifest")
    assert table.column("path").to_pylist() == manifest.column("path").to_pylist()
    assert table.column("label").to_pylist() == manifest.column("label").to_pylist()
    resize = eval_resize(p.train.image_size)
    for h, w, blob in zip(table.column("height").to_pylist(), table.column("width").to_pylist(),
                          table.column("pixels").to_pylist()):
        assert min(h, w) == resize and len(blob) == h * w * 3  # grey, CMYK... all RGB now


def test_augmentation_is_fixed_by_seed_not_workers(tiny_project):
    p, table = decoded(tiny_project)

    def batches(workers, epoch, seed=0):
        train = WorkerBatches(DecodedImages(table, p.train.image_size, seed), p.train.batch_size, workers)
        train.set_epoch(epoch)
        return [x for x, _ in train]

    one, two = batches(0, 1), batches(2, 1)
    assert one[0].dtype == torch.uint8 and one[0].shape[1:] == (3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    assert not torch.equal(torch.cat(one), torch.cat(batches(0, 2)))
    assert not torch.equal(torch.cat(one), torch.cat(batches(0, 1, seed=1)))


def flat_store(images):
    """HWC uint8 images as resized_crops takes them: bytes back to back, starts, widths."""
    heights = torch.tensor([i.shape[0] for i in images])
    widths = torch.tensor([i.shape[1] for i in images])
    sizes = heights * widths * 3
    return torch.cat([i.reshape(-1) for i in images]), torch.cumsum(sizes, 0) - sizes, heights, widths


SHAPES = [(256, 341), (341, 256), (256, 900), (900, 256), (37, 37), (40, 600), (3, 3)]


@pytest.mark.parametrize("size", [224, 32])
def test_batched_crops_are_torchvisions_antialiased_resize(size):
    # The device path's batched resize computes torchvision's antialias=True weights:
    # against torchvision's float resize it differs only where rounding to uint8 ties.
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SHAPES]
    pixels, starts, heights, widths = flat_store(images)
    for epoch in range(3):
        plan = plan_epoch(0, epoch, heights, widths)
        got = resized_crops(pixels, starts, widths, torch.arange(len(images)), plan.boxes, plan.flips, size)
        for k, image in enumerate(images):
            top, left, h, w = plan.boxes[k].tolist()
            expected = F.resized_crop(image.permute(2, 0, 1).float(), top, left, h, w, [size, size], antialias=True)
            expected = (expected.flip(-1) if plan.flips[k] else expected).round().clamp(0, 255)
            diff = (got[k].float() - expected).abs()
            assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3


def test_device_path_gives_the_workers_paths_batches_within_a_level(tiny_project):
    # The two augmentation paths follow one plan: the same images in the same order, and
    # pixels within one level (torchvision's uint8 resize rounds between its two passes;
    # the batched one does not). Measured: about 10-20% of values one level apart.
    p, table = decoded(tiny_project)
    size, batch = p.train.image_size, p.train.batch_size
    workers = WorkerBatches(DecodedImages(table, size, seed=0), batch, p.runtime.num_workers)
    resident = ResidentBatches(DecodedImages(table, size, seed=0), batch, torch.device("cpu"))
    assert len(workers) == len(resident) == 3  # 12 images, batches of 4
    for epoch in (1, 2):
        workers.set_epoch(epoch)
        resident.set_epoch(epoch)
        for (xa, ya), (xb, yb) in zip(workers, resident, strict=True):
            assert torch.equal(ya, yb) and xa.shape == xb.shape and xb.dtype == torch.uint8
            diff = (xa.int() - xb.int()).abs().float()
            assert diff.max() <= 1 and diff.mean() < 0.3


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
    from hotdog.data.manifest import Item, probe_image
    from stages import decode, manifest

    manifest.main()
    bad = tiny_project / "data/hotdog/train/hotdog/0.png"
    bad.write_bytes(png_with_bad_pixels())
    assert probe_image(tiny_project / "data/hotdog", Item("train/hotdog/0.png", 0, "hotdog", "train")).row is not None
    with pytest.raises(StageError, match=r"data/hotdog/train/hotdog/0.png passed the manifest's check but does "
                                         r"not decode \(.*\); replace it in the data set"):
        decode.main()
    assert not (tiny_project / "data/decoded/train.arrow").exists()


# ------------------------------------------------------ augment: auto and device memory


def test_auto_keeps_a_split_on_the_gpu_only_when_it_fits():
    cuda, gib = torch.device("cuda"), 2 ** 30
    assert data.pick_augment("auto", cuda, 3 * gib, 40 * gib) == ("device", None)
    path, why = data.pick_augment("auto", cuda, 30 * gib, 40 * gib)  # 100k photos: no room left
    assert path == "workers"
    assert why.startswith("train.augment auto: the decoded train split (30.0 GiB) is more than 50% of the "
                          "40.0 GiB free on cuda; augmenting on DataLoader workers instead")
    assert data.pick_augment("auto", torch.device("cpu"), 30 * gib, None) == ("workers", None)
    assert data.pick_augment("device", cuda, 30 * gib, 1) == ("device", None)  # asked for: obeyed


def test_a_split_over_the_budget_falls_back_to_workers_and_says_why(decoded_project, capsys):
    # A CUDA device with a budget below the split: the fallback builds the workers path, which
    # runs on the CPU, so this runs anywhere.
    p = load_params("train")
    images = data.read_train_images(p.paths.decoded_file("train"), p.train.image_size, 0)
    needed = data.split_bytes(images)
    batches = data.train_batches(images, "auto", 4, 0, torch.device("cuda"), free=needed)
    assert batches.name == "workers"
    assert f"is more than 50% of the {needed / 2 ** 30:.1f} GiB free on cuda" in capsys.readouterr().out
    images.set_epoch(1)
    x, y = next(iter(batches))
    assert x.shape == (4, 3, p.train.image_size, p.train.image_size)


def in_memory_split(n: int = 10, seed: int = 0) -> pa.Table:
    """A decoded split made in memory (no decode stage, no process pool): odd sizes, two labels."""
    rng = np.random.default_rng(seed)
    shapes = [(40 + 7 * i, 37 + 5 * (i % 3)) for i in range(n)]
    pixels = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8).tobytes() for h, w in shapes]
    return pa.table([pa.array([f"{i}.png" for i in range(n)]), pa.array([i % 2 for i in range(n)], pa.int64()),
                     pa.array([h for h, _ in shapes], pa.int32()), pa.array([w for _, w in shapes], pa.int32()),
                     pa.array(pixels, pa.large_binary())], schema=DECODED)


def test_a_training_sample_depends_on_seed_epoch_and_index_only():
    # Why runtime.num_workers changes no result (tests/test_train.py shows it on a whole run):
    # each DataLoader worker holds a copy of the dataset and draws nothing of its own. A copy
    # (as a worker gets one), asked in another order, gives the same crops.
    import pickle

    images = DecodedImages(in_memory_split(), 32, seed=0)
    images.set_epoch(1)
    loader = WorkerBatches(images, 4, 0)
    batches = [x for x, _ in loader]
    copy = pickle.loads(pickle.dumps(images))
    order = images.plan.order.tolist()
    again = {i: copy[i][0] for i in reversed(order)}
    assert torch.equal(torch.cat(batches), torch.stack([again[i] for i in order]))
    images.set_epoch(2)
    assert not torch.equal(torch.cat(batches), torch.cat([x for x, _ in loader]))
    other = DecodedImages(in_memory_split(), 32, seed=1)
    other.set_epoch(1)
    assert not torch.equal(torch.cat(batches), torch.cat([x for x, _ in WorkerBatches(other, 4, 0)]))
