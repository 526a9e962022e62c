"""Where the data set comes from: a zip or a tar (http(s)://, file:// or a path) with its SHA-1, or a
local folder of images laid out as hotdog.data.layout describes.

DVC tracks neither a URL's bytes nor a folder outside the repo, so the source stage, which
DVC always runs, records the source in paths.source: for a zip its URL and digest,
for a folder a digest of its images' listing (each one's path, size and modification time). The
download stage depends on that record, so it runs again exactly when the source changed;
a folder is then packed into a zip with fixed dates, so photos that did not change give the
same bytes, and nothing after download runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

from hotdog.core.errors import StageError
from hotdog.core.files import atomic_path, size_text
from hotdog.data.archive import is_junk
from hotdog.data.fetch import is_local, local_path
from hotdog.data.layout import check_no_empty_folders, class_list, detect, is_image_name, select

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: every packing of the same files is byte-identical


def folder_of(url: str) -> Path | None:
    """The local folder data.url names, or None for a zip (a URL or a file)."""
    if not is_local(url):
        return None
    path = local_path(url)
    return path if path.is_dir() else None


def folder_files(folder: Path) -> list[str]:
    """Every file under `folder` as a relative POSIX name, sorted, macOS junk left out.
    Links are followed to files, never to folders (a loop, or a tree outside)."""
    return folder_tree(folder)[1]


def folder_tree(folder: Path) -> tuple[list[str], list[str]]:
    """(every folder, every file) under `folder` as relative POSIX names, sorted, junk left out."""
    folders, found = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        rel = Path(dirpath).relative_to(folder).as_posix()
        if rel != "." and not is_junk(rel + "/"):
            folders.append(rel)
        for name in filenames:
            path = f"{name}" if rel == "." else f"{rel}/{name}"
            if not is_junk(path) and (Path(dirpath) / name).is_file():
                found.append(path)
    return sorted(folders), sorted(found)


def recorded_folder(url: str, sha1: str | None, record: Path) -> dict | None:
    """The last record (at `record`) of the folder `url` names, when that folder is not on
    this machine: a clone that pulled the outputs from a DVC remote has them, and the photos'
    digests in the manifest, without the photos. Kept, nothing after the source stage runs;
    the download stage alone needs the folder. None when the folder is here, or no record
    of it is."""
    if sha1 is not None or not is_local(url) or local_path(url).exists():
        return None
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    same = isinstance(recorded, dict) and recorded.get("kind") == "folder" and recorded.get("url") == url
    return recorded if same else None


def describe(url: str, sha1: str | None) -> dict:
    """The record of the data source: what the download stage must fetch, and, for a folder,
    a digest of what it holds now."""
    folder = folder_of(url)
    # Only where no SHA-1 is given: an archive's record is its URL and digest, which a clone
    # that pulled the outputs has without the archive (the download stage fetches it, or says
    # it is not there). Without one, asking for an archive's SHA-1 would mislead.
    if folder is None and sha1 is None and is_local(url) and not local_path(url).exists():
        raise StageError(f"data.url names {url}, which does not exist (relative paths start at {Path.cwd()}); "
                         "point it at your folder of photos, or at an archive, in params.yaml")
    if folder is None and sha1 is None and is_local(url) and is_image_name(url):
        raise StageError(f"data.url names one image ({url}); point it at the folder that holds your class folders, "
                         "or at an archive of them, in params.yaml")
    if folder is None:
        if sha1 is None:
            raise StageError(f"data.sha1 is null, but data.url names an archive, not a folder ({url}); set data.sha1 "
                             "to the archive's SHA-1 (sha1sum <file>) in params.yaml")
        return {"kind": "zip", "url": url, "sha1": sha1}
    if sha1 is not None:
        raise StageError(f"data.sha1 is set, but data.url names a folder ({folder}), whose images the manifest's "
                         "SHA-1s pin; set data.sha1: null in params.yaml")
    listing = hashlib.sha1()
    # Only the images: editing a README or notes beside them re-runs nothing.
    files = [name for name in folder_files(folder) if is_image_name(name)]
    for name in files:
        stat = (folder / name).stat()
        listing.update(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return {"kind": "folder", "url": url, "path": str(folder.resolve()), "files": len(files),
            "listing": listing.hexdigest()}


def pack(folder: Path, dest: Path, max_bytes: int, classes: list[str] | None) -> int:
    """Zip the images of `folder` (its layout checked, only the classes data.classes picks)
    into `dest`, stored uncompressed with fixed dates, atomically; returns the number of files."""
    folders, files = folder_tree(folder)
    layout = detect(files, str(folder))
    check_no_empty_folders(layout, folders, files, classes, str(folder))
    chosen = select(layout.classes, classes, str(folder))
    names = sorted(layout.prefix + name for cls in chosen for name in layout.files[cls])
    total = sum((folder / name).stat().st_size for name in names)
    if total > max_bytes:
        raise StageError(f"{folder}: its images take {size_text(total)}, more than the {size_text(max_bytes)} that "
                         "runtime.max_unpacked_gib allows; raise it in params.yaml, or pick fewer classes")
    with atomic_path(dest) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name in names:
            info = zipfile.ZipInfo(name, ZIP_DATE)
            with (folder / name).open("rb") as src, archive.open(info, "w") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    print(f"packed {len(names):,} images of {len(chosen)} classes ({class_list(chosen, 8)}){layout.under} "
          f"from {folder} into {dest}", flush=True)
    if layout.left_out:
        print(layout.left_out_line(str(folder)), flush=True)
    return len(names)
