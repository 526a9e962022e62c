"""Where `hotdog predict` and the demo get images: files, folders and http(s) URLs, read as
bytes with a size limit. A problem with one input is an ImageError (or an Unusable from
`expand`) that says why; the caller goes on with the others."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from hotdog.core.files import size_text
from hotdog.core.http import TIMEOUT, USER_AGENT
from hotdog.data.archive import is_junk
from hotdog.data.layout import IMAGE_SUFFIXES, is_image_name

# A folder is searched for what the training data counts as images (IMAGE_SUFFIXES); a file
# named on the command line is tried whatever its name.
MAX_IMAGE_BYTES = 50 << 20  # per image: a photo is a few MiB; more is a mistake or an attack


class ImageError(Exception):
    """One image cannot be scored; the message says why and what to do, without the source."""


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class Unusable(NamedTuple):
    """An input that names nothing to score, and why."""

    source: str
    error: str


def expand(inputs: Iterable[str]) -> Iterator[str | Unusable]:
    """Each input as a source to score, a folder as its images (sorted, recursively), or an
    Unusable for an input that names nothing to score."""
    for given in inputs:
        path = Path(given)
        if is_url(given) or path.is_file():
            yield given
        elif path.is_dir():
            # As the pipeline reads a data set: no thumbnails from a photo tool's hidden folders.
            found = sorted(str(p) for p in path.rglob("*")
                           if is_image_name(p.name) and not is_junk(p.relative_to(path).as_posix()) and p.is_file())
            if not found:
                yield Unusable(given, f"no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            yield from found
        elif "://" in given:
            yield Unusable(given, "only http:// and https:// URLs can be fetched")
        else:
            yield Unusable(given, "no such file or folder; check the path")


def read_url(url: str, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The body at an http(s) URL, at most `limit` bytes."""
    try:
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            data = response.read(limit + 1)
    except urllib.error.HTTPError as err:
        raise ImageError(f"the server answered HTTP {err.code} {err.reason}; check the URL") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ImageError(f"cannot fetch it ({reason}); check the URL and the network") from None
    # Neither is an OSError: a port that is no number (InvalidURL), a bracket left open or a
    # host name IDNA cannot encode (ValueError), each raised before anything is sent.
    except (http.client.InvalidURL, ValueError) as err:
        raise ImageError(f"not a valid URL ({err}); check it") from None
    except http.client.IncompleteRead:
        raise ImageError("the server stopped in the middle of the image; try again, or check the URL") from None
    except http.client.HTTPException as err:  # BadStatusLine, LineTooLong: not a web server
        # repr: the server's own line, \r\n and all, must not break the message's one line
        raise ImageError(f"the server's answer is not HTTP ({type(err).__name__}: {str(err)[:80]!r}); "
                         f"check the URL and its port") from None
    return check_size(data, limit)


def read_file(path: Path, limit: int = MAX_IMAGE_BYTES) -> bytes:
    try:
        with path.open("rb") as f:
            return check_size(f.read(limit + 1), limit)
    except OSError as err:
        raise ImageError(f"cannot read it ({err.strerror}); check the file") from None


def check_size(data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise ImageError(f"larger than {size_text(limit)}; pass a photo, or shrink it first")
    if not data:
        raise ImageError("empty (0 bytes); pass a photo")
    return data
