"""Unpacking a data set's archive: only its images (hotdog.data.layout), never outside the
target folder, never more than a size limit or the free disk space, with the layout checked
before anything is written."""

from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Sequence

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path, size_text
from hotdog.data.layout import Layout, detect, select

_DRIVE = re.compile(r"^[A-Za-z]:")


def is_junk(name: str) -> bool:
    """Whether a member is macOS metadata, which is skipped rather than extracted."""
    # Archives zipped on a Mac carry __MACOSX/ resource forks and .DS_Store files; they
    # are not images, and would otherwise count as undecodable rejects in the manifest.
    parts = PurePosixPath(name).parts
    if not parts:
        return False
    return "__MACOSX" in parts or parts[-1] == ".DS_Store" or parts[-1].startswith("._")


def safe_members(archive: zipfile.ZipFile, where: Path) -> list[zipfile.ZipInfo]:
    """The archive's non-junk members; refuses any that would land outside the target folder."""
    members = []
    for info in archive.infolist():
        name = info.filename
        # Backslashes count as separators too: a zip made on Windows may use them.
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
            raise StageError(f"{where}: unsafe member {name!r} (absolute or outside the target "
                             f"folder); refusing to extract; check data.url in params.yaml")
        if not is_junk(name):
            members.append(info)
    return members


def check_size(members: list[zipfile.ZipInfo], where: Path, dest: Path, max_bytes: int) -> None:
    """Refuse, before anything is written, an archive whose members say they unpack to more
    than `max_bytes` or than the free space where `dest` will be."""
    # The sizes come from the central directory. They bound what extraction can write:
    # zipfile's ZipExtFile stops at a member's declared file_size and then checks its CRC,
    # so a member that holds more than it declares fails as corrupt instead of filling the disk.
    declared = sum(info.file_size for info in members if not info.is_dir())
    if declared > max_bytes:
        raise StageError(f"{where}: its files would unpack to {size_text(declared)}, more than the "
                         f"{size_text(max_bytes)} that runtime.max_unpacked_gib allows (a zip bomb?); "
                         f"check data.url, or raise runtime.max_unpacked_gib in params.yaml")
    folder = next(p for p in [dest, *dest.parents] if p.exists())  # dest itself may not exist yet
    free = shutil.disk_usage(folder).free
    if declared > free:
        raise StageError(f"{where}: its files would unpack to {size_text(declared)}, more than the "
                         f"{size_text(free)} free on {folder}; free some disk space, or check data.url "
                         f"in params.yaml")


def extract(zip_path: Path, dest: Path, max_bytes: int, classes: Sequence[str] | None = None) -> Layout:
    """Extract the archive's images into `dest`, atomically, after checking its layout
    (hotdog.data.layout): train/ and test/ as they are, or class folders alone, each without
    the one top folder they may be inside. Only the classes selected by `classes`
    (data.classes; None: all) are extracted. Returns the layout."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = safe_members(archive, zip_path)  # before anything is written
            files = {m.filename: m for m in members if not m.is_dir()}
            layout = detect(list(files), str(zip_path))
            chosen = set(select(layout.classes, classes, str(zip_path)))
            wanted = [files[layout.prefix + name] for cls in sorted(chosen) for name in layout.files[cls]]
            check_size(wanted, zip_path, Path(dest), max_bytes)
            with atomic_path(dest) as tmp:
                tmp.mkdir()
                for info in wanted:
                    _extract_member(archive, info, tmp / info.filename[len(layout.prefix):])
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise StageError(f"{zip_path}: corrupt zip archive ({err}); check data.url and data.sha1 "
                         f"in params.yaml") from None
    print(f"extracted {len(wanted):,} files of {len(chosen)} classes into {dest}", flush=True)
    if layout.left_out:
        print(layout.left_out_line(str(zip_path)), flush=True)
    return layout


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
