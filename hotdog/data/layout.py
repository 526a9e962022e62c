"""Where a data set keeps its images, and so its classes.

Two layouts, each at the top of the archive or folder, or inside a top folder (or a folder
in it, and so on: a single folder at each level):
- `train/` and `test/`, each holding the same class folders of images (d2l's hotdog.zip),
  where `val/`, `valid/` or `validation/` may stand in for `test/` (HELD_OUT); or the same
  split kept the other way round, inside each class folder (`cat/train/`, `cat/test/`);
- class folders of images alone, which the manifest stage splits (hotdog.data.split).

An image belongs to the class folder it is in, however deep: `cat/2019/beach/1.jpg` is a
`cat`, as torchvision's ImageFolder and Keras's image_dataset_from_directory read a class
folder (people keep photos in folders by date or place). Its path below the class folder is
kept as it is.

The classes are the class folders' names, sorted as torchvision's ImageFolder sorts them,
unless data.classes pins an order or a subset. Everything here works on relative POSIX file
names, so a zip's members and a folder's files are read the same way.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import PurePosixPath
from typing import NamedTuple, Sequence

from hotdog.core.errors import StageError
from hotdog.core.names import SPLITS

SPLIT = "split"  # train/ and test/ given
FOLDERS = "folders"  # class folders alone: the pipeline splits them
MIN_CLASSES = 2
MIN_IMAGES = 2  # a class the pipeline splits needs an image to train on and one to test
# The folder beside train/ that is the test split, the first of these a data set has: d2l's
# hotdog.zip has test/, Ultralytics' sets val/, fastai's valid/, Hugging Face's validation/.
# It is unpacked as test/, and any other of them is left out (said so in one line).
HELD_OUT = (SPLITS[1], "val", "valid", "validation")

# What counts as an image, by the file's suffix in any case, as Keras, fastai and Ultralytics
# count theirs: the formats photos come in that Pillow reads. `hotdog predict` searches a
# folder for the same. A fixed list rather than Pillow's registry, so which files a data set
# holds cannot change with the Pillow version. Any other file (a LICENSE.txt beside the class
# folders, a labels.csv, Windows' Thumbs.db, a phone's .heic) is left out, and the download
# stage says so in one line. An image that does not decode is the manifest's reject, as before.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                  ".ppm", ".pgm", ".pbm", ".pnm")  # the last four: netpbm, as GTSRB's signs come


def is_image_name(name: str) -> bool:
    """Whether a file's name says it is an image (IMAGE_SUFFIXES, any case)."""
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES


def kinds_of(names: Sequence[str]) -> str:
    """How many of each suffix `names` hold, the commonest first: "2 .txt, 1 .heic, 1 without one"."""
    counts = Counter(PurePosixPath(n).suffix.lower() for n in names)
    return ", ".join(f"{count} {suffix or 'without one'}" for suffix, count in
                     sorted(counts.items(), key=lambda item: (-item[1], not item[0], item[0])))


class Layout(NamedTuple):
    """A data set's layout: the folder its images are under, how they are laid out, and the
    files each class holds (relative to that folder)."""

    prefix: str  # "", "top/" or "top/inner/": the folder everything is under, dropped on extraction
    kind: str  # SPLIT or FOLDERS
    files: dict[str, list[str]]  # class -> its files, relative to prefix, sorted
    left_out: tuple[str, ...] = ()  # the files not named as images, as given, sorted
    held_out: str = SPLITS[1]  # SPLIT: the folder beside train/ that is the test split
    unused: tuple[str, ...] = ()  # SPLIT: the other HELD_OUT folders the data set has, left out
    inside: bool = False  # SPLIT: the split folders are inside each class folder (cat/train/)

    @property
    def classes(self) -> tuple[str, ...]:
        """Every class folder found, sorted."""
        return tuple(sorted(self.files))

    @property
    def under(self) -> str:
        """" in top/" when the layout sits inside single top folders, else "", for the line
        naming the classes: one class folder of folders (cat/a/, cat/b/) reads as classes a
        and b inside cat/, which only this shows."""
        return f" in {self.prefix}" if self.prefix else ""

    def unpacked_name(self, name: str) -> str:
        """Where the file `name` (relative to `prefix`) goes in the images folder: the same,
        but for the held-out folder, which becomes test/, and a split inside each class
        folder, which goes on top (cat/val/1.jpg becomes test/cat/1.jpg)."""
        if self.kind != SPLIT:
            return name
        if self.inside:
            cls, split, rest = name.split("/", 2)
            return f"{SPLITS[0] if split == SPLITS[0] else SPLITS[1]}/{cls}/{rest}"
        if name.startswith(f"{self.held_out}/"):
            return f"{SPLITS[1]}/{name[len(self.held_out) + 1:]}"
        return name

    def split_line(self, where: str) -> str | None:
        """One line on which folder is the test split, when it is not test/ alone at the top;
        else None."""
        if self.kind != SPLIT or (self.held_out == SPLITS[1] and not self.unused and not self.inside):
            return None
        unused = f"; left out: {', '.join(f'{u}/' for u in self.unused)}" if self.unused else ""
        if self.inside:
            return (f"{where}: each class folder's train/ and {self.held_out}/ are the split, unpacked as "
                    f"train/<class>/ and test/<class>/{unused}")
        return f"{where}: {self.held_out}/ is the test split{unused}"

    def folder_of(self, name: str) -> str | None:
        """The class folder that the file `name` (relative to `prefix`) counts in, as the data
        set spells it ("cat", "train/cat" or "cat/train"), or None for a file the layout
        ignores: one outside train/ and the held-out folder."""
        parts = name.split("/")
        if self.kind == FOLDERS:
            return parts[0] if len(parts) >= 2 else None
        split = parts[1 if self.inside else 0] if len(parts) >= 3 else None
        return "/".join(parts[:2]) if split in (SPLITS[0], self.held_out) else None

    def class_of(self, folder: str) -> str:
        """The class a folder from folder_of holds."""
        parts = folder.split("/")
        return parts[1] if self.kind == SPLIT and not self.inside else parts[0]

    def split_of(self, folder: str) -> str:
        """The split folder (as the data set names it) of a folder from folder_of; "" for FOLDERS."""
        parts = folder.split("/")
        return "" if self.kind == FOLDERS else parts[1 if self.inside else 0]

    def left_out_line(self, where: str) -> str | None:
        """One line on the files left out as no images, for the log; None when there are none."""
        if not self.left_out:
            return None
        return (f"{where}: left out {len(self.left_out)} file(s) not named as images ({kinds_of(self.left_out)}; "
                f"e.g. {self.left_out[0]}); the images taken end in {' '.join(IMAGE_SUFFIXES)}: convert any "
                "photo among the others to JPEG or PNG to use it")


def held_out_of(tops: set[str]) -> str | None:
    """The test split's folder when train/ is at the top beside one of HELD_OUT, else None."""
    if SPLITS[0] not in tops:
        return None
    return next((name for name in HELD_OUT if name in tops), None)


def kind_of(tops: set[str]) -> str:
    """SPLIT when train/ and test/ (or val/, valid/, validation/) are at the top, else FOLDERS."""
    return SPLIT if held_out_of(tops) else FOLDERS


def detect(files: Sequence[str], where: str) -> Layout:
    """The layout of a data set from its files' relative POSIX names (junk already left out).

    Only the files named as images count (IMAGE_SUFFIXES); the others are the layout's
    `left_out`, wherever they are. `where` names the archive or folder in the one-line error
    for a layout that is neither: an image at the wrong depth, fewer than two classes, or
    train/ and test/ whose class folders differ. In the SPLIT layout any image outside train/
    and the held-out folder (HELD_OUT) is ignored too."""
    given = sorted(n for n in files if n)
    check_no_file_is_a_folder(given, where)
    names = [n for n in given if is_image_name(n)]
    left_out = tuple(n for n in given if not is_image_name(n))
    if not names:
        others = f", only {len(left_out)} other file(s) ({kinds_of(left_out)})" if left_out else ""
        raise StageError(f"{where}: no images found{others}; expected class folders of images ending in "
                         f"{' '.join(IMAGE_SUFFIXES)}; check data.url in params.yaml")
    tops = {n.split("/")[0] for n in names}
    prefix = ""
    while kind_of(tops) == FOLDERS and len(tops) == 1 and any(n.count("/") >= 2 for n in names):
        # Everything inside one top folder that holds folders: the layout is inside it, or
        # inside a folder in it, as Kaggle's zips have it (flowers/flowers/daisy/…). (A top
        # folder of images alone is one class folder.)
        top = f"{tops.pop()}/"
        prefix += top
        names = [n[len(top):] for n in names]
        tops = {n.split("/")[0] for n in names}
    held_out = held_out_of(tops)
    inside = False
    if held_out is None:
        held_out = held_out_inside(names, where)
        inside = held_out is not None
    kind = SPLIT if held_out else FOLDERS
    splits = {n.split("/")[1] for n in names if n.count("/") >= 2} if inside else tops
    unused = tuple(name for name in HELD_OUT if name in splits and name != held_out) if kind == SPLIT else ()
    shape = Layout(prefix, kind, {}, left_out, held_out or SPLITS[1], unused, inside)
    files: dict[str, list[str]] = {}
    per_split: dict[str, set[str]] = {}
    for name in names:
        folder = shape.folder_of(name)
        top = name.split("/")[0]
        if folder is None and kind == FOLDERS and all("/" not in n for n in names):
            # Images and no folder at all: data.url names one class's folder, most likely.
            raise StageError(f"{where}: no class folders, only images ({prefix + name}, ...); point data.url at the "
                             "folder that holds one folder of images per class, in params.yaml")
        if folder is None and kind == FOLDERS:
            raise wrong_depth(where, prefix + name, "<class>/<image>, or train/ and test/ each holding them")
        if folder is None and not inside and top in (SPLITS[0], held_out):
            raise wrong_depth(where, prefix + name, f"{top}/<class>/<image>")
        if folder is None:
            continue  # beside the split folders, as a README is: not the data set's
        per_split.setdefault(shape.split_of(folder), set()).add(shape.class_of(folder))
        files.setdefault(shape.class_of(folder), []).append(name)
    check_no_empty_classes(shape, where, {shape.folder_of(name) for name in names})
    if kind == SPLIT:
        train, test = (per_split.get(s, set()) for s in (SPLITS[0], shape.held_out))
        if train != test:
            raise StageError(f"{where}: train/ and {held_out}/ hold different class folders (only in train/: "
                             f"{sorted(train - test) or 'none'}; only in {held_out}/: "
                             f"{sorted(test - train) or 'none'}); give both the same classes; check data.url "
                             "in params.yaml")
    check_no_split_as_a_class(files, 1 if kind == SPLIT else 0, prefix, where)
    layout = shape._replace(files={cls: sorted(found) for cls, found in files.items()})
    check_classes(layout, where)
    return layout


def held_out_inside(names: Sequence[str], where: str) -> str | None:
    """The test split's folder when every class folder holds its own train/ beside one of
    HELD_OUT (cat/train/, cat/test/, dog/train/, dog/test/), a split kept the other way round;
    None when no class folder does. One line when only some do: which of their photos are
    test photos would be a guess."""
    subfolders: dict[str, set[str]] = {}
    for parts in (name.split("/") for name in names if "/" in name):
        subfolders.setdefault(parts[0], set()).update(parts[1:2] if len(parts) >= 3 else ())
    split = sorted(cls for cls, found in subfolders.items() if held_out_of(found))
    if not split:
        return None
    held_out = next(name for name in HELD_OUT if any(name in subfolders[cls] for cls in split))
    for cls, found in sorted(subfolders.items()):
        if missing := [f"{name}/" for name in (SPLITS[0], held_out) if name not in found]:
            raise StageError(f"{where}: class folder '{cls}' holds no {' or '.join(missing)} of images, but "
                             f"'{split[0]}' holds its own train/ and {held_out}/; give every class folder both, "
                             "or none (the pipeline then splits them); check data.url in params.yaml")
    return held_out


def check_no_empty_classes(layout: Layout, where: str, present: set[str | None]) -> None:
    """Refuse a class folder whose files are all left out (a folder of .heic photos, say),
    which would otherwise drop out of the classes, or out of one split. `present` holds the
    class folders (Layout.folder_of) that have images."""
    only_others: dict[str, list[str]] = {}
    for name in layout.left_out:
        if not name.startswith(layout.prefix):
            continue
        folder = layout.folder_of(name[len(layout.prefix):])
        if folder is not None and folder not in present:
            only_others.setdefault(folder, []).append(name)
    if only_others:
        folder, names = sorted(only_others.items())[0]
        raise StageError(f"{where}: class folder '{folder}' holds {len(names)} file(s) but no image named as one "
                         f"({kinds_of(names)}; e.g. {names[0]}); convert them to JPEG or PNG, or remove the folder")


def class_list(classes: Sequence[str], limit: int = 6) -> str:
    """Class names for a message: all of them, or the first `limit` and how many more. The
    download stage's line names them, so that a misread layout shows; the report and the
    model card use it too."""
    shown = ", ".join(classes[:limit])
    return shown if len(classes) <= limit else f"{shown} and {len(classes) - limit} more"


def check_no_file_is_a_folder(names: Sequence[str], where: str) -> None:
    """Refuse a name that is a file and also a folder holding others (x.png and x.png/y.png),
    which no disk can hold."""
    folders = {name[:i] for name in names for i, char in enumerate(name) if char == "/"}
    both = sorted(folders.intersection(names))
    if both:
        raise StageError(f"{where}: {both[0]} is both a file and a folder; rename one; check data.url in params.yaml")


# Folder names that say "a split", in any case and with any decoration: Training/,
# test_set/, seg_train/. Such a folder at the class level that holds folders of images is a
# split the layout did not recognise, not a class (Kaggle's cats and dogs comes as
# training_set/training_set/cats/), and taking it as one would train "train against test".
SPLIT_WORDS = frozenset({"train", "training", "test", "testing", "val", "valid", "validation"})


def check_no_split_as_a_class(files: dict[str, list[str]], depth: int, prefix: str, where: str) -> None:
    """Refuse a class whose name is a split's and whose images are in folders inside it;
    `depth` is the class folder's place in the names (1 under train/ and test/, else 0)."""
    for cls, names in sorted(files.items()):
        deeper = [name for name in names if name.count("/") > depth + 1]
        if deeper and SPLIT_WORDS & set(re.split(r"[^a-z]+", cls.lower())):
            raise StageError(f"{where}: '{cls}' looks like a split, not a class, and holds folders of images "
                             f"(e.g. {prefix}{deeper[0]}); name the splits train/ and test/ (or val/), each holding "
                             "the class folders, at the top or inside a single top folder; check data.url in "
                             "params.yaml")


def wrong_depth(where: str, name: str, expected: str) -> StageError:
    return StageError(f"{where}: {name} is at the wrong depth; expected {expected} (at the top or inside "
                      "a single top folder); move it, or check data.url in params.yaml")


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


def check_no_empty_folders(layout: Layout, folders: Sequence[str], files: Sequence[str],
                           wanted: Sequence[str] | None, where: str) -> None:
    """Refuse a class folder that holds no file at all, which would drop out of the classes
    without a word (torchvision's ImageFolder refuses one too); with data.classes, only one
    it names. `folders` and `files` are the data set's, relative to its root, junk left out."""
    holding = {"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)}
    named = None if wanted is None else {unicodedata.normalize("NFC", n) for n in wanted}
    for folder in sorted(set(folders) - holding):
        if not folder.startswith(layout.prefix):
            continue
        found = layout.folder_of(folder[len(layout.prefix):] + "/x")
        if found is None or found != folder[len(layout.prefix):]:
            continue  # a folder inside a class folder, or one the layout does not read
        cls = layout.class_of(found)
        if cls in layout.files or (named is not None and unicodedata.normalize("NFC", cls) not in named):
            continue
        raise StageError(f"{where}: class folder '{folder}' is empty; add its images, or remove it "
                         f"{'(or leave it out of data.classes in params.yaml)' if named else ''}".rstrip())


def select(found: Sequence[str], wanted: Sequence[str] | None, where: str) -> tuple[str, ...]:
    """The classes in label order: the found ones sorted, or data.classes (an order, or a
    subset of at least two); one line for a name that is not a class folder."""
    if wanted is None:
        return tuple(sorted(found))
    # A name typed in params.yaml is composed (NFC: "è" one character), and a folder made on
    # a Mac or zipped there decomposed (NFD: "e" and an accent): the same to the eye, and
    # taken as the same, in the folder's own spelling, which its files are under.
    spelled = {unicodedata.normalize("NFC", name): name for name in found}
    wanted = [spelled.get(unicodedata.normalize("NFC", name), name) for name in wanted]
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
