"""hotdog.model.torchfile against torch.load(weights_only=True): whatever the reader accepts, torch
loads as a dict of tensors with the same keys and shapes; whatever torch refuses, the reader
refuses; and it never runs what a file names."""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch
import torchvision

from hotdog.model.torchfile import tensor_shapes


class RunsCode:
    """Unpickled without weights_only, this would create the folder `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def saved(obj: object, **kwargs) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, **kwargs)
    return buf.getvalue()


def rewritten(data: bytes, change: Callable[[str, bytes], bytes]) -> bytes:
    """A torch.save zip with each record's bytes passed through `change` (CRCs made anew)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dest:
        for info in src.infolist():
            dest.writestr(info, change(info.filename, src.read(info.filename)))
    return out.getvalue()


def views() -> dict:
    base = torch.arange(12, dtype=torch.float32)
    return {"row": base.view(3, 4)[1], "column": base.view(3, 4)[:, 2], "transposed": base.view(3, 4).t(),
            "tail": base[5:], "scalar": torch.tensor(3), "same": base}


def out_of_bounds() -> bytes:
    # The storage says 200 floats (its record holds them), the tensor wants 300.
    data = saved({"w": torch.zeros(300)})
    return rewritten(data, lambda name, b: b.replace(b"M\x2c\x01", b"M\xc8\x00", 1) if name.endswith("data.pkl")
                     else b[:800] if name.endswith("data/0") else b)


def bad_crc() -> bytes:
    data = bytearray(saved({"w": torch.ones(64)}))
    at = bytes(data).rindex(b"\x00\x00\x80\x3f")  # a 1.0 of the last tensor's record
    data[at + 3] = 0x40
    return bytes(data)


# What torch.save (and the cases a stage must refuse) may put in a weights file.
ACCEPTED = {
    "resnet18": lambda: saved(torchvision.models.resnet18(weights=None).state_dict()),
    "views-and-shared-storage": lambda: saved(views()),
    "dtypes": lambda: saved({str(d): torch.zeros(2, 3, dtype=d) for d in (
        torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
        torch.int8, torch.uint8, torch.bool)}),
    "plain-dict": lambda: saved(dict(torchvision.models.resnet18(weights=None).state_dict())),
    "bad-crc-in-a-tensor": bad_crc,  # torch reads records without checking their CRCs, and so do we
}
REFUSED = {
    "a-parameter": lambda: saved({"w": torch.nn.Parameter(torch.ones(2))}),  # torch loads it; we defer
    "a-list": lambda: saved([torch.zeros(1)]),
    "a-string-value": lambda: saved({"conv1.weight": torch.zeros(1), "fc.weight": "x"}),
    "an-empty-tensor": lambda: saved({"w": torch.zeros(0, 3)}),
    "runs-code": lambda: saved(RunsCode(Path("/nonexistent/never-made"))),
    "not-a-zip": lambda: b"<html>not a torch file</html>",
    "torn-zip": lambda: b"PK\x03\x04 not a torch file at all",
    "legacy-format": lambda: saved({"w": torch.ones(2)}, _use_new_zipfile_serialization=False),
    "protocol-4": lambda: saved({"w": torch.ones(2)}, pickle_protocol=4),
    "record-short": lambda: rewritten(saved({"w": torch.ones(4)}), lambda n, b: b[:-4] if n.endswith("data/0") else b),
    "record-long": lambda: rewritten(saved({"w": torch.ones(4)}), lambda n, b: b + b"\0" * 4 if n.endswith("data/0") else b),
    "out-of-bounds": out_of_bounds,
    "big-endian": lambda: rewritten(saved({"w": torch.ones(4)}), lambda n, b: b"big" if n.endswith("byteorder") else b),
}


def torch_shapes(path: Path) -> dict | None:
    """{key: shape} as torch.load(weights_only=True) gives it; None if it refuses or gives
    anything but a dict of tensors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("case", ACCEPTED)
def test_the_reader_gives_what_torch_gives(tmp_path: Path, case: str) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(ACCEPTED[case]())
    shapes = tensor_shapes(path)
    assert shapes is not None and shapes == torch_shapes(path)
    assert list(shapes) == list(torch_shapes(path))


@pytest.mark.parametrize("case", REFUSED)
def test_the_reader_leaves_the_rest_to_torch(tmp_path: Path, case: str) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(REFUSED[case]())
    assert tensor_shapes(path) is None


def test_the_reader_never_runs_what_a_file_names(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "w.pth"
    path.write_bytes(saved({"w": torch.ones(1), "x": RunsCode(marker)}))
    assert tensor_shapes(path) is None and not marker.exists()


def test_a_changed_pickle_is_read_as_torch_reads_it_or_left_to_torch(tmp_path: Path) -> None:
    # One byte of data.pkl changed, 300 ways (the CRCs made anew, so the pickle is what is
    # tested): the reader may decline what torch loads, never accept what torch refuses or
    # read other shapes than torch does.
    good = saved(views())
    rng = random.Random(0)
    accepted = 0
    for _ in range(300):
        at, value = rng.randrange(4096), rng.randrange(256)

        def change(name: str, data: bytes) -> bytes:
            if not name.endswith("data.pkl"):
                return data
            i = at % len(data)
            return data[:i] + bytes([value]) + data[i + 1:]

        path = tmp_path / "w.pth"
        path.write_bytes(rewritten(good, change))
        shapes = tensor_shapes(path)
        if shapes is not None:
            accepted += 1
            assert shapes == torch_shapes(path)
    assert accepted > 0  # some changes keep a valid state dict (a digit of a key, a memo slot)
