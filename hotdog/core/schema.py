"""The Parquet tables that pass between stages: one pyarrow schema each, checked on
write and on read, so a stage never consumes a table it does not understand."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path

MANIFEST = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # POSIX, relative to paths.images
        pa.field("label", pa.int64(), nullable=False),  # index into names.CLASSES
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

PREDICTIONS = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("predicted", pa.int64(), nullable=False),
        pa.field("prob_hotdog", pa.float32(), nullable=False),
        pa.field("loss", pa.float32(), nullable=False),
    ]
)

# hotdog.serving.predict's answers for new images (`hotdog predict --out`, the hotdog-predict flow):
# one row per image and model, named as the manifest names a class. An image that could not
# be scored keeps its row, with the error and no prediction.
SCORED = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # as given: a path or an http(s) URL
        pa.field("model", pa.string(), nullable=False),
        pa.field("predicted", pa.int64()),  # index into names.CLASSES
        pa.field("class_name", pa.string()),
        pa.field("prob_hotdog", pa.float32()),
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
