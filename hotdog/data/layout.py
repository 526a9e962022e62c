"""Where a data set keeps its images, and so its classes.

Two layouts, each at the top of the archive or folder, or inside one top folder:
- `train/` and `test/`, each holding the same class folders of images (d2l's hotdog.zip);
- class folders of images alone, which the manifest stage splits (hotdog.data.split).

The classes are the class folders' names, sorted as torchvision's ImageFolder sorts them,
unless data.classes pins an order or a subset. Everything here works on relative POSIX file
names, so a zip's members and a folder's files are read the same way.
"""

from __future__ import annotations

from collections import Counter
from typing import NamedTuple, Sequence

from hotdog.core.errors import StageError
from hotdog.core.names import SPLITS

SPLIT = "split"  # train/ and test/ given
FOLDERS = "folders"  # class folders alone: the pipeline splits them
MIN_CLASSES = 2
MIN_IMAGES = 2  # a class the pipeline splits needs an image to train on and one to test


class Layout(NamedTuple):
    """A data set's layout: the folder its images are under, how they are laid out, and the
    files each class holds (relative to that folder)."""

    prefix: str  # "" or "top/": the folder everything is under, dropped on extraction
    kind: str  # SPLIT or FOLDERS
    files: dict[str, list[str]]  # class -> its files, relative to prefix, sorted

    @property
    def classes(self) -> tuple[str, ...]:
        """Every class folder found, sorted."""
        return tuple(sorted(self.files))


def kind_of(tops: set[str]) -> str:
    """SPLIT when train/ and test/ are both at the top, else FOLDERS."""
    return SPLIT if set(SPLITS) <= tops else FOLDERS


def detect(files: Sequence[str], where: str) -> Layout:
    """The layout of a data set from its files' relative POSIX names (junk already left out).

    `where` names the archive or folder in the one-line error for a layout that is neither:
    an image at the wrong depth, fewer than two classes, or train/ and test/ whose class
    folders differ. In the SPLIT layout anything outside train/ and test/ is ignored, as a
    README beside them would be."""
    names = [n for n in files if n]
    if not names:
        raise StageError(f"{where}: no files found; expected class folders of images; check data.url in params.yaml")
    tops = {n.split("/")[0] for n in names}
    prefix = ""
    if kind_of(tops) == FOLDERS and len(tops) == 1 and any(n.count("/") >= 2 for n in names):
        # Everything inside one top folder that holds folders: the layout is inside it. (A top
        # folder of images alone is one class folder.)
        prefix = f"{tops.pop()}/"
        names = [n[len(prefix):] for n in names]
        tops = {n.split("/")[0] for n in names}
    kind = kind_of(tops)
    files: dict[str, list[str]] = {}
    if kind == SPLIT:
        per_split: dict[str, set[str]] = {}
        for name in names:
            parts = name.split("/")
            if parts[0] not in SPLITS:
                continue
            if len(parts) != 3:
                raise wrong_depth(where, prefix + name, f"{parts[0]}/<class>/<image>")
            per_split.setdefault(parts[0], set()).add(parts[1])
            files.setdefault(parts[1], []).append(name)
        train, test = (per_split.get(s, set()) for s in SPLITS)
        if train != test:
            raise StageError(f"{where}: train/ and test/ hold different class folders (only in train/: "
                             f"{sorted(train - test) or 'none'}; only in test/: {sorted(test - train) or 'none'}); "
                             "give both the same classes; check data.url in params.yaml")
    else:
        for name in names:
            parts = name.split("/")
            if len(parts) != 2:
                raise wrong_depth(where, prefix + name, "<class>/<image>, or train/ and test/ each holding them")
            files.setdefault(parts[0], []).append(name)
    layout = Layout(prefix, kind, {cls: sorted(found) for cls, found in files.items()})
    check_classes(layout, where)
    return layout


def wrong_depth(where: str, name: str, expected: str) -> StageError:
    return StageError(f"{where}: {name} is at the wrong depth; expected {expected} (at the top or inside "
                      "one top folder); move it, or check data.url in params.yaml")


def check_classes(layout: Layout, where: str) -> None:
    """At least two classes, and, when the pipeline splits them, enough images in each."""
    if len(layout.files) < MIN_CLASSES:
        raise StageError(f"{where}: found {len(layout.files)} class folder(s) ({', '.join(layout.classes) or 'none'}); "
                         f"a classifier needs at least {MIN_CLASSES}; check data.url in params.yaml")
    if layout.kind == FOLDERS:
        few = {cls: len(found) for cls, found in layout.files.items() if len(found) < MIN_IMAGES}
        if few:
            cls, count = sorted(few.items())[0]
            raise StageError(f"{where}: class '{cls}' has {count} image(s); each class needs at least {MIN_IMAGES} "
                             "(one to train on, one to test) when the pipeline splits them; add images or "
                             "remove the folder")


def select(found: Sequence[str], wanted: Sequence[str] | None, where: str) -> tuple[str, ...]:
    """The classes in label order: the found ones sorted, or data.classes (an order, or a
    subset of at least two); one line for a name that is not a class folder."""
    if wanted is None:
        return tuple(sorted(found))
    twice = [name for name, n in Counter(wanted).items() if n > 1]
    if twice:
        raise StageError(f"data.classes names '{twice[0]}' twice; list each class once")
    missing = [name for name in wanted if name not in found]
    if missing:
        raise StageError(f"data.classes names '{missing[0]}', which is no class folder of {where} (found: "
                         f"{', '.join(sorted(found))}); correct data.classes in params.yaml")
    if len(wanted) < MIN_CLASSES:
        raise StageError(f"data.classes lists {len(wanted)} class(es); a classifier needs at least {MIN_CLASSES}")
    return tuple(wanted)
