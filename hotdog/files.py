"""Atomic writes: an output appears under its final name only once it is complete."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; move it onto `dest` only if the block succeeds.

    The temporary name starts with a dot so that a half-written file is never taken
    for the real one, and it sits in the same folder so the final rename is atomic.
    Works for files and folders; an existing `dest` is replaced.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and dest.exists():
            _remove(dest)  # os.replace cannot put a folder over an existing one
        os.replace(tmp, dest)
    finally:
        _remove(tmp)


def write_json(dest: Path, obj: Any) -> None:
    """Write `obj` as stable, sorted, indented JSON, atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
