"""Atomic writes: an output appears under its final name only once it is complete, and a
write that fails for want of space is one line naming the file."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hotdog.core.errors import StageError

# A full disk, a full quota, or a file over the process's size limit (RLIMIT_FSIZE).
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# torch.save to a path reports a failed write from its C++ zip writer with no errno: its
# position check fails ("unexpected pos 768 vs 662", torch 2.14), or an older message.
# (save_checkpoint passes torch a Python file instead, so the OSError shows through.)
_TORCH_WRITE_FAILED = ("unexpected pos", "file write failed", "basic_ios::clear")


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and the errors it arose from (its causes and contexts), each once."""
    chain: list[BaseException] = []
    cause: BaseException | None = err
    while cause is not None and all(cause is not c for c in chain):
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    return chain


def interrupted_by(err: BaseException) -> BaseException | None:
    """The stop `err` arose from (Ctrl-C, or the Stopped that run_main raises on SIGTERM), if
    any. torch.save, stopped midway, reports a failed write ("unexpected pos") as it unwinds,
    with the stop as its context: that is a stop, not a full disk."""
    return next((c for c in _chain(err) if not isinstance(c, Exception)), None)


def no_room(err: BaseException) -> str | None:
    """Why a write failed, when `err` (or an error it arose from) is a lack of room; else None."""
    chain = _chain(err)
    # The errno's words when there is one: torch's RuntimeError carries the OSError as its context.
    for cause in chain:
        if isinstance(cause, OSError) and cause.errno in NO_ROOM:
            return os.strerror(cause.errno)
    if any(isinstance(c, RuntimeError) and any(s in str(c) for s in _TORCH_WRITE_FAILED) for c in chain):
        return "the write failed"
    return None


def cannot_write(dest: Path, reason: str) -> str:
    """The one-line message for an output that could not be written for want of room."""
    return f"cannot write {dest}: {reason} (disk full or over a file-size limit); free some space and re-run"


def size_text(n: float) -> str:
    """A byte count for people: 812 B, 3.4 KiB, 256.0 MiB, 1.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


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
    Works for files and folders; an existing `dest` is replaced. A write that fails for
    want of room (see `no_room`) becomes a one-line StageError naming `dest`.
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
    except StageError:
        raise  # already says what is wrong
    except Exception as err:
        stop = interrupted_by(err)
        if stop is not None:
            raise stop from None  # run_main reports it as the stop it is
        reason = no_room(err)
        if reason is None:
            raise
        raise StageError(cannot_write(dest, reason)) from None
    finally:
        _remove(tmp)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (about a second for the real decoded train split)."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(dest: Path, obj: Any) -> None:
    """Write `obj` as stable, sorted, indented JSON, atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
