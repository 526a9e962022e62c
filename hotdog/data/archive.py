"""Unpacking a data set's archive, a zip or a tar (plain, gzip, bzip2 or xz, as torchvision's
and Keras's downloads take them): only its images (hotdog.data.layout), only regular files,
never outside the target folder, never more than a size limit or the free disk space, with
the layout checked before anything is written."""

from __future__ import annotations

import errno
import lzma
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Iterator, NamedTuple, Sequence

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path, size_text
from hotdog.data.layout import Layout, check_no_empty_folders, class_list, detect, is_image_name, select

_DRIVE = re.compile(r"^[A-Za-z]:")
# What a damaged archive raises while it is read: zipfile's and tarfile's own errors, those of
# the decompressors underneath, and OSErrors: gzip's and bz2's carry no errno, and a zip whose
# directory points past its end makes a seek fail with EINVAL. Only these errnos are the
# disk's own trouble, and stay as they are.
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, OSError)
_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO}


class Member(NamedTuple):
    """One entry of an archive, whatever its format: its name (as given, until safe_members
    makes it a plain relative POSIX path), its declared size, whether it is a folder or a
    regular file (not a link or a special file), and the format's own record of it."""

    name: str
    size: int
    is_dir: bool
    info: zipfile.ZipInfo | tarfile.TarInfo
    regular: bool = True


def is_junk(name: str) -> bool:
    """Whether a file is metadata that tools leave beside photos, skipped rather than taken."""
    # Archives zipped on a Mac carry __MACOSX/ resource forks, .DS_Store and ._ files; photo
    # tools keep thumbnails and originals in hidden folders (.thumbnails/, .picasaoriginals/)
    # and Synology's in @eaDir/. Inside a class folder, whose subfolders are the class's own
    # photos, their JPEGs would count as photos, near-copies of the real ones.
    parts = PurePosixPath(name).parts
    return any(part.startswith(".") or part in ("__MACOSX", "@eaDir") for part in parts)


def kind_of_archive(path: Path) -> str:
    """"zip" or "tar" (plain or compressed), from the file's bytes rather than its name."""
    with path.open("rb") as f:
        head = f.read(4)
    # A zip's first local header (or an empty zip's end record): a damaged zip is still one,
    # and says so when opened. The tar check comes before zipfile's own, which takes any file
    # with a zip's end record in its last 64 KiB, as a tar whose last member is a zip has.
    if head in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):  # a zip behind a stub, as a self-extracting one is
        return "zip"
    raise StageError(f"{path}: neither a zip nor a tar archive; check data.url and data.sha1 in params.yaml")


def zip_name(info: zipfile.ZipInfo) -> str:
    """A zip member's name. Without the zip's UTF-8 flag, zipfile reads a name as cp437, as the
    format says; but Info-ZIP's `zip` on Linux (and macOS's tools) write UTF-8 without the
    flag, so "grüne Äpfel/1.jpg" came out as "gr├╝ne ├äpfel/1.jpg". Such a name is taken as
    UTF-8 when its bytes are valid UTF-8, which a real cp437 name outside ASCII rarely is."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except UnicodeError:
        return info.filename


@contextmanager
def opened(path: Path, kind: str) -> Iterator[tuple[list[Member], Callable[..., IO[bytes]]]]:
    """(every member in archive order, a way to read one from its `info`) of a zip or a tar.

    Links and special files are members too; safe_members refuses those named as images."""
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            # A zip made on Unix may hold a symbolic link: a member whose mode says so.
            yield [Member(zip_name(i), i.file_size, i.is_dir(), i, not stat.S_ISLNK(i.external_attr >> 16))
                   for i in archive.infolist()], archive.open
        return
    with tarfile.open(path, "r:*") as archive:
        members = []
        for info in archive:  # in order, so that reading them back only seeks forwards
            members.append(Member(info.name, info.size if info.isreg() else 0, info.isdir(), info, info.isreg()))
        # tarfile stops without a word at a damaged header past the first one; a whole tar
        # ends in zero blocks (or just ends), so anything else there is damage.
        archive.fileobj.seek(archive.offset)
        if archive.fileobj.read(tarfile.BLOCKSIZE).strip(b"\0"):
            raise tarfile.ReadError(f"a damaged member header at byte {archive.offset}")
        yield members, archive.extractfile


def safe_members(members: list[Member], where: Path) -> list[Member]:
    """The archive's non-junk members, their names made plain relative POSIX paths. Refuses
    any that would land outside the target folder, a link or special file named as an
    image, and two files whose names differ only in spelling."""
    kept = []
    spelled: dict[str, str] = {}  # plain name -> the name a file was given as
    for member in members:
        name = member.name
        # Backslashes count as separators too: a zip made on Windows may use them.
        parts = name.replace("\\", "/").split("/")
        # "train\\hotdog\\1.jpg", "train/./hotdog/1.jpg" and "train//hotdog/1.jpg" all name
        # train/hotdog/1.jpg; left as given, the layout would read a class named "." or "".
        plain = "/".join(part for part in parts if part not in ("", "."))
        if name.startswith(("/", "\\")) or _DRIVE.match(name) or _DRIVE.match(plain) or ".." in parts:
            raise StageError(f"{where}: unsafe member {name!r} (absolute or outside the target "
                             f"folder); refusing to extract; check data.url in params.yaml")
        is_dir = member.is_dir or name.endswith(("/", "\\"))  # a Windows tool's folder: "cat\\"
        if not plain or is_junk(plain):
            continue
        if not is_dir:
            if not member.regular and is_image_name(plain):
                # Only regular files are ever written; one not named as an image (a LICENSE
                # linked to a shared copy) is left out and counted, as any such file is.
                raise StageError(f"{where}: member {name!r} is a link or a special file, not an image; "
                                 "refusing to extract; check data.url in params.yaml")
            if plain in spelled:  # spelt apart, or the same name twice (a zip may hold both)
                raise StageError(f"{where}: members {spelled[plain]!r} and {name!r} both name the file "
                                 f"{plain!r}; refusing to extract; check data.url in params.yaml")
            spelled[plain] = name
        kept.append(member._replace(name=plain, is_dir=is_dir))
    return kept


def check_size(members: list[Member], where: Path, dest: Path, max_bytes: int) -> None:
    """Refuse, before anything is written, an archive whose members say they unpack to more
    than `max_bytes` or than the free space where `dest` will be."""
    # The sizes come from a zip's central directory or a tar's headers. They bound what
    # extraction can write: zipfile's ZipExtFile stops at a member's declared file_size and
    # then checks its CRC, so a member that holds more than it declares fails as corrupt
    # instead of filling the disk; a tar member's data is its header's size, by the format.
    declared = sum(m.size for m in members if not m.is_dir)
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


def extract(archive_path: Path, dest: Path, max_bytes: int, classes: Sequence[str] | None = None) -> Layout:
    """Extract the archive's images into `dest`, atomically, after checking its layout
    (hotdog.data.layout): train/ and test/ as they are, or class folders alone, each without
    the single top folders they may be inside. Only the classes selected by `classes`
    (data.classes; None: all) are extracted. Returns the layout."""
    kind = kind_of_archive(archive_path)
    try:
        with opened(archive_path, kind) as (members, read):
            members = safe_members(members, archive_path)  # before anything is written
            files = {m.name: m for m in members if not m.is_dir}
            layout = detect(list(files), str(archive_path))
            check_no_empty_folders(layout, [m.name.rstrip("/") for m in members if m.is_dir], list(files), classes,
                                   str(archive_path))
            chosen = select(layout.classes, classes, str(archive_path))
            wanted = {layout.prefix + name for cls in chosen for name in layout.files[cls]}
            # In archive order, so that a tar reads forwards; a folder of the same name as an
            # image (a tar drops the folder's trailing /) is not one.
            wanted_members = [m for m in members if m.regular and not m.is_dir and m.name in wanted]
            check_size(wanted_members, archive_path, Path(dest), max_bytes)
            with atomic_path(dest) as tmp:
                tmp.mkdir()
                for member in wanted_members:
                    _extract_member(read, member, tmp / layout.unpacked_name(member.name[len(layout.prefix):]))
    except _CORRUPT as err:
        if isinstance(err, OSError) and err.errno in _DISK:
            raise  # the disk's trouble, not the archive's
        raise StageError(f"{archive_path}: corrupt {kind} archive ({err}); check data.url and data.sha1 "
                         f"in params.yaml") from None
    print(f"extracted {len(wanted_members):,} files of {len(chosen)} classes ({class_list(chosen, 8)}){layout.under} "
          f"into {dest}", flush=True)
    for line in (layout.split_line(str(archive_path)), layout.left_out_line(str(archive_path))):
        if line:
            print(line, flush=True)
    return layout


def _extract_member(read: Callable, member: Member, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with read(member.info) as src, target.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
