"""Unpacking the hotdog archive: only train/ and test/, never outside the target folder,
with the layout checked before the folder appears under its name."""

from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from hotdog.errors import StageError
from hotdog.files import atomic_path
from hotdog.params import CLASSES, SPLITS

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


def find_root(names: list[str], where: Path) -> str:
    """The prefix of the folder holding train/ and test/: '' (the archive root) or 'top/'."""
    tops = {name.split("/")[0] for name in names}
    if set(SPLITS) <= tops:
        return ""
    if len(tops) == 1:
        top = tops.pop()
        seconds = {name.split("/")[1] for name in names if name.count("/") >= 1}
        if set(SPLITS) <= seconds:
            return f"{top}/"
    raise StageError(f"{where}: expected {' and '.join(SPLITS)} folders at the top or inside one "
                     f"top folder, found {sorted(tops)}; check data.url in params.yaml")


def check_layout(root: Path, where: Path) -> None:
    """Require root/<split>/<class>/ for every split and class, each holding a file."""
    for split in SPLITS:
        for cls in CLASSES:
            folder = root / split / cls
            if not folder.is_dir():
                problem = f"missing folder {split}/{cls}/"
            elif not any(p.is_file() for p in folder.iterdir()):
                problem = f"folder {split}/{cls}/ is empty"
            else:
                continue
            raise StageError(f"{where}: {problem}; check data.url in params.yaml")


def extract(zip_path: Path, dest: Path) -> None:
    """Extract the archive's train/ and test/ into `dest`, atomically, after checking it."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            members = safe_members(archive, zip_path)  # before anything is written
            prefix = find_root([m.filename for m in members], zip_path)
            wanted = tuple(f"{prefix}{split}/" for split in SPLITS)  # anything else is dropped
            with atomic_path(dest) as tmp:
                tmp.mkdir()
                for info in members:
                    if info.filename.startswith(wanted):
                        _extract_member(archive, info, tmp / info.filename[len(prefix):])
                check_layout(tmp, zip_path)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise StageError(f"{zip_path}: corrupt zip archive ({err}); delete it and re-run, "
                         f"or check data.url in params.yaml") from None


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
