"""The Parquet tables that pass between stages: one pyarrow schema each, checked on
write and on read, so a stage never consumes a table it does not understand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path

MANIFEST = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # POSIX, relative to paths.images
        pa.field("label", pa.int64(), nullable=False),  # index into the table's classes (classes_of)
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("sha1", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("format", pa.string(), nullable=False),  # as PIL names it: PNG, JPEG, ...
        pa.field("mode", pa.string(), nullable=False),  # as loaded, before RGB conversion
    ]
)

# One row per test image and model, for any number of classes: the true and predicted
# class (index and name) and every class's probability, in the order the table records
# (classes_of).
PREDICTIONS = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("true_class", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("predicted", pa.int64(), nullable=False),
        pa.field("predicted_class", pa.string(), nullable=False),
        pa.field("probabilities", pa.list_(pa.float32()), nullable=False),
        pa.field("confidence", pa.float32(), nullable=False),  # the predicted class's probability
        pa.field("loss", pa.float32(), nullable=False),
    ]
)

# hotdog.serving.predict's answers for new images (`hotdog predict --out`, the hotdog-predict flow):
# one row per image and model, for any number of classes. Each row carries its model's
# classes (label order; two models may differ) and every class's probability in that order,
# so `dict(zip(row.classes, row.probabilities))` names them. An image that could not be
# scored keeps its row, with the error and no prediction.
SCORED = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # as given: a path or an http(s) URL
        pa.field("model", pa.string(), nullable=False),
        pa.field("predicted", pa.int64()),  # index into classes
        pa.field("class_name", pa.string()),
        pa.field("confidence", pa.float32()),  # the predicted class's probability
        pa.field("classes", pa.list_(pa.string()), nullable=False),
        pa.field("probabilities", pa.list_(pa.float32())),
        pa.field("error", pa.string()),
    ]
)

# Decoded images, one row per manifest row in the same order: uint8 RGB pixels (HWC),
# resized so the shorter side is the test resize. Written as an Arrow IPC file, which
# is memory-mapped when read, so a stage pays no copy to use it.
DECODED = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("pixels", pa.large_binary(), nullable=False),
    ]
)

# The data set's classes in label order ride along in a table's schema metadata, from the
# manifest to the decoded files, so every stage reads them with the rows they label.
CLASSES_KEY = b"hotdog.classes"


def with_classes(table: pa.Table, classes: Sequence[str]) -> pa.Table:
    """`table`, its schema recording `classes` (label order)."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}),
                                          CLASSES_KEY: json.dumps(list(classes)).encode()})


def classes_of(table: pa.Table | pa.Schema, path: Path, stage: str) -> tuple[str, ...]:
    """The classes a table records (with_classes); one line when it records none."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    raw = (schema.metadata or {}).get(CLASSES_KEY)
    if raw is None:
        raise StageError(f"{path} does not record its classes (an older version wrote it); run `dvc repro {stage}`")
    return tuple(json.loads(raw))


# Which columns a table's rows are sorted by: sorted rows make the file byte-identical
# for the same input, so DVC's hashes only move when the content does.
SORT_KEYS = {id(MANIFEST): ["path"], id(PREDICTIONS): ["model", "path"], id(SCORED): ["model", "path"]}


def sort_rows(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """The table's rows in the schema's canonical order."""
    keys = SORT_KEYS[id(schema)]
    return table.sort_by([(k, "ascending") for k in keys])


def write_table(table: pa.Table, dest: Path, schema: pa.Schema) -> None:
    """Check `table` against `schema`, sort it, and write it atomically as Parquet."""
    if not table.schema.equals(schema):
        # A programming error, not a user one: say exactly which columns differ.
        raise TypeError(f"table for {dest} does not match its schema:\n{table.schema}\n!=\n{schema}")
    table = sort_rows(table, schema)
    with atomic_path(Path(dest)) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _read_checked(read, kind: str, path: Path, schema: pa.Schema, stage: str) -> pa.Table:
    """read(path), with its schema checked; `stage` is the stage that writes the file."""
    try:
        table = read(path)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro {stage}` first") from None
    except (pa.ArrowInvalid, OSError) as err:
        raise StageError(f"{path} is not a readable {kind} file ({err}); run `dvc repro {stage}`") from None
    if not table.schema.equals(schema):
        raise StageError(f"{path} has columns {table.schema.names} with other types than expected "
                         f"{schema.names}; it was written by another version, run `dvc repro {stage}`")
    return table


def read_table(path: Path, schema: pa.Schema, stage: str) -> pa.Table:
    """Read a Parquet table and check its schema; `stage` is the stage that writes it."""
    return _read_checked(pq.read_table, "Parquet", path, schema, stage)


def write_arrow(batches, dest: Path, schema: pa.Schema) -> None:
    """Write record batches as an Arrow IPC file, atomically; they come in manifest order,
    which is already sorted by path."""
    with atomic_path(Path(dest)) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in batches:
                writer.write_batch(batch)


def read_arrow(path: Path, schema: pa.Schema, stage: str) -> pa.Table:
    """Memory-map an Arrow IPC file and check its schema; `stage` is the stage that writes it."""
    return _read_checked(lambda p: pa.ipc.open_file(pa.memory_map(str(p))).read_all(), "Arrow",
                         path, schema, stage)
