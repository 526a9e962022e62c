"""The keys and shapes of a torch.save file that holds one dict of tensors, read without torch,
whose import alone takes seconds: all the weights stage needs of a good file.

This is a smaller copy of torch.load(weights_only=True) (torch/_weights_only_unpickler.py and
torch.serialization._load): fewer opcodes and globals, and the same checks of the zip records.
It calls nothing a file names: the three kinds of global it knows become its own records.
Whatever it does not know gives None, and the caller asks torch. So what it accepts, torch
accepts too, and torch's own words explain every refusal.
"""

from __future__ import annotations

import copy
import io
import pickle
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, NamedTuple

# Bytes per element of the storage classes (torch.<name>) a state dict of plain tensors uses.
ITEMSIZE = {"DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
            "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}
FORMAT_VERSION = b"3\n"  # the `version` record torch.save writes
ZIP_MAGIC = b"PK\x03\x04"  # torch.serialization._is_zipfile: the file starts with a local header
# The opcodes that push one value, and how they read it.
CONSTANTS = {pickle.NONE: None, pickle.NEWFALSE: False, pickle.NEWTRUE: True, pickle.EMPTY_TUPLE: (),
             pickle.EMPTY_LIST: [], pickle.EMPTY_DICT: {}}
NUMBERS = {pickle.BININT: (4, "<i"), pickle.BININT1: (1, "<B"), pickle.BININT2: (2, "<H"), pickle.BINFLOAT: (8, ">d")}
# The opcodes that take a fixed number of values off the stack, as their mark-based forms do.
SINGLE = {pickle.TUPLE1: (pickle.TUPLE, 1), pickle.TUPLE2: (pickle.TUPLE, 2), pickle.TUPLE3: (pickle.TUPLE, 3),
          pickle.SETITEM: (pickle.SETITEMS, 2), pickle.APPEND: (pickle.APPENDS, 1)}


class Unknown(Exception):
    """Something this reader does not handle; torch decides."""


class StorageType(NamedTuple):
    """What the global torch.<name>Storage stands for: the element size."""

    itemsize: int


class Storage(NamedTuple):
    """A persistent id: the record data/<key>, `numel` elements of `itemsize` bytes."""

    key: str
    itemsize: int
    numel: int


class Tensor(NamedTuple):
    shape: tuple[int, ...]


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]] | None:
    """{key: shape} when torch.load(path, weights_only=True) would give a dict of tensors;
    None when the file is anything else, or anything this reader does not know."""
    try:
        with path.open("rb") as f:
            if f.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
                return None
        with zipfile.ZipFile(path) as zf:
            records = _records(zf)
            state = _unpickle(zf.read(records["data.pkl"]), records)
    except Exception:  # Unknown, or a torn file in one of many ways: torch.load decides and says why
        return None
    if type(state) not in (dict, OrderedDict) or not all(type(v) is Tensor for v in state.values()):
        return None
    return {k: v.shape for k, v in state.items()}


def _records(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's records by name under its one folder, after torch's checks of them."""
    infos = zf.infolist()
    if not infos or "/" not in infos[0].filename:
        raise Unknown  # torch: "file in archive is not in a subdirectory"
    folder = infos[0].filename.split("/", 1)[0] + "/"
    records = {i.filename.removeprefix(folder): i for i in infos}
    if (len(records) != len(infos) or not all(i.filename.startswith(folder) for i in infos)
            or any(i.compress_type != zipfile.ZIP_STORED for i in infos)):
        raise Unknown  # duplicates, a second folder or compression: torch.save writes none
    if zf.read(records["version"]) != FORMAT_VERSION or "constants.pkl" in records:
        raise Unknown  # another format version, or TorchScript
    if "byteorder" in records and zf.read(records["byteorder"]) != b"little":
        raise Unknown
    return records


def _storage(pid: Any, records: dict[str, zipfile.ZipInfo], seen: dict[str, Storage]) -> Storage:
    """torch.serialization._load's persistent_load, which reads the record data/<key>."""
    if type(pid) is not tuple or len(pid) != 5 or pid[0] != "storage":
        raise Unknown
    _, kind, key, location, numel = pid
    if type(kind) is not StorageType or type(key) is not str or type(location) is not str or type(numel) is not int:
        raise Unknown
    storage = Storage(key, kind.itemsize, numel)
    if seen.setdefault(key, storage) != storage:
        raise Unknown  # torch would reuse the first one under another type
    if records[f"data/{key}"].file_size != numel * kind.itemsize:
        raise Unknown  # torch: "record size ... does not match expected size"
    return storage


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any) -> Tensor:
    """torch._utils._rebuild_tensor_v2 of a plain tensor, with Tensor.set_'s bounds check."""
    if (type(storage) is not Storage or type(offset) is not int or type(size) is not tuple
            or type(stride) is not tuple or len(size) != len(stride) or requires_grad is not False
            or type(hooks) is not OrderedDict or hooks):
        raise Unknown
    if not all(type(n) is int and n >= 0 for n in (offset, *stride)) or not all(type(n) is int and n > 0 for n in size):
        raise Unknown  # an empty tensor has bounds rules of its own, and no weights file needs one
    if offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel:
        raise Unknown  # torch: "setStorage: ... out of bounds for storage"
    return Tensor(size)


def _global(module: str, name: str) -> Any:
    if (module, name) == ("collections", "OrderedDict"):
        return OrderedDict
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        return _rebuild_tensor_v2
    if module == "torch" and name in ITEMSIZE:
        return StorageType(ITEMSIZE[name])
    raise Unknown  # torch.load refuses most globals, and we know only these


def _reduce(func: Any, args: Any) -> Any:
    if func is OrderedDict and type(args) is tuple and not args:
        return OrderedDict()
    if func is _rebuild_tensor_v2 and type(args) is tuple and len(args) == 6:
        return _rebuild_tensor_v2(*args)
    raise Unknown


def _unpickle(data: bytes, records: dict[str, zipfile.ZipInfo]) -> Any:
    """torch's weights_only Unpickler.load, limited to the opcodes torch.save writes for a
    dict of tensors (protocol 2)."""
    f = io.BytesIO(data)
    read = f.read
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}
    seen: dict[str, Storage] = {}
    while True:
        op = read(1)
        if op == pickle.STOP:
            return stack.pop()
        if op == pickle.PROTO:
            if read(1) != b"\x02":
                raise Unknown
        elif op == pickle.GLOBAL:
            module = f.readline()[:-1].decode("utf-8")
            stack.append(_global(module, f.readline()[:-1].decode("utf-8")))
        elif op == pickle.REDUCE:
            args = stack.pop()
            stack[-1] = _reduce(stack[-1], args)
        elif op == pickle.BUILD:
            state = stack.pop()  # an OrderedDict's attributes (a state dict's _metadata): dropped
            if type(stack[-1]) is not OrderedDict or type(state) is not dict:
                raise Unknown
        elif op == pickle.BINPERSID:
            stack.append(_storage(stack.pop(), records, seen))
        elif op == pickle.MARK:
            marks.append(stack)
            stack = []
        elif op in (pickle.TUPLE, pickle.SETITEMS, pickle.APPENDS):
            items, stack = stack, marks.pop()
            _collect(op, items, stack)
        elif op in SINGLE:
            items = [stack.pop() for _ in range(SINGLE[op][1])][::-1]
            _collect(SINGLE[op][0], items, stack)
        elif op in (pickle.BINPUT, pickle.LONG_BINPUT):
            memo[read(1)[0] if op == pickle.BINPUT else struct.unpack("<I", read(4))[0]] = stack[-1]
        elif op in (pickle.BINGET, pickle.LONG_BINGET):
            stack.append(memo[read(1)[0] if op == pickle.BINGET else struct.unpack("<I", read(4))[0]])
        else:
            stack.append(_value(op, read))


def _collect(op: bytes, items: list[Any], stack: list[Any]) -> None:
    """TUPLE, SETITEMS or APPENDS of `items`: a tuple pushed, or the container below filled."""
    if op == pickle.TUPLE:
        stack.append(tuple(items))
    elif op == pickle.SETITEMS:
        if type(stack[-1]) not in (dict, OrderedDict) or len(items) % 2:
            raise Unknown
        for i in range(0, len(items), 2):
            stack[-1][items[i]] = items[i + 1]
    else:
        if type(stack[-1]) is not list:
            raise Unknown
        stack[-1].extend(items)


def _value(op: bytes, read: Callable[[int], bytes]) -> Any:
    """The value an opcode that only pushes one pushes."""
    if op in CONSTANTS:
        return copy.copy(CONSTANTS[op])  # a fresh [] or {} each time
    if op in NUMBERS:
        size, fmt = NUMBERS[op]
        return struct.unpack(fmt, read(size))[0]
    if op == pickle.LONG1:
        return int.from_bytes(read(read(1)[0]), "little", signed=True)
    if op == pickle.BINUNICODE:
        return str(read(struct.unpack("<I", read(4))[0]), "utf-8", "surrogatepass")
    raise Unknown  # end of data, or an opcode torch.save does not write for a dict of tensors
