"""Fetch a URL (http, https, file) or a local path to a file, verifying its digest.

Shared by the download and weights stages; it has no stage of its own. Downloads
resume and retry; nothing appears under the final name until the digest matches. Progress
is a bar on a terminal and plain lines in a log.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import ssl
import sys
import time
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from hotdog.core.errors import TRANSIENT_EXIT, StageError
from hotdog.core.files import cannot_write, no_room, size_text
from hotdog.core.http import TIMEOUT, USER_AGENT

# Module constants rather than arguments so that tests can shrink them with monkeypatch.
ATTEMPTS = 5
BASE_DELAY = 1.0  # seconds before the 2nd attempt; doubles for each one after
CHUNK = 1 << 16
MIN_PREFIX = 8  # hex digits; torchvision file names carry the first 8 of the SHA-256
UNSIZED_STEP = 10 << 20  # bytes between log lines when the server sends no Content-Length
SNIFF = 512  # bytes read to tell an HTML page from the file
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class FetchError(StageError):
    """A fetch failed; the subclasses say whether retrying later can help."""


class DownloadError(FetchError):
    """A transient network failure that outlasted the retries; retrying later may help."""

    exit_code = TRANSIENT_EXIT


class SourceError(FetchError):
    """The source itself is wrong (HTTP 4xx, missing local file, bad URL); do not retry."""


class DigestMismatch(FetchError):
    """The fetched bytes do not have the expected digest; do not retry."""


class _Transient(Exception):
    """One attempt failed in a way that another attempt may not."""


def fetch(
    source: str,
    dest: Path,
    algorithm: str,
    expected_hex: str,
    *,
    section: str | None = None,
    check: Callable[[Path], object] | None = None,
) -> Path:
    """Fetch `source` to `dest`, verify its digest (full or prefix), run `check`, then rename."""
    dest = Path(dest)
    expected = _check_expected(expected_hex)
    hints = _Hints(section, algorithm)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")  # dotted: never mistaken for the output
    try:
        if is_local(source):
            _copy_local(local_path(source), part, hints)
            labelled_html = False
        else:
            labelled_html = _download(_http_url(source, hints), part, hints)
        _verify(source, part, algorithm, expected, hints, labelled_html)
        if check is not None:
            check(part)
        os.replace(part, dest)
    except OSError as err:  # local disk trouble; network errors were mapped already
        reason = no_room(err)
        if reason is not None:
            raise FetchError(cannot_write(dest, reason)) from None
        raise FetchError(f"{source} -> {dest}: {err}; check free space and permissions") from err
    finally:
        part.unlink(missing_ok=True)
    return dest


def _verify(source: str, part: Path, algorithm: str, expected: str, hints: _Hints,
            labelled_html: bool) -> None:
    """Check the fetched bytes: not empty, not an HTML page, and with the expected digest."""
    local = is_local(source)
    # Both before the digest, whose mismatch message would advise adopting the wrong file.
    if part.stat().st_size == 0:
        raise SourceError(f"{source}: the {'file' if local else 'download'} is empty (0 bytes); "
                          f"check {hints.url}")
    actual = hash_file(part, algorithm)
    # The body decides; a text/html label alone only explains a mismatch, since a
    # misconfigured server may label the right file so.
    if looks_like_html(part) or (labelled_html and not actual.startswith(expected)):
        what = "the file is an HTML page (a saved login or error page?)" if local else \
            "the server sent an HTML page, not the file (a login or error page?)"
        raise SourceError(f"{source}: {what}; check {hints.url}")
    if not actual.startswith(expected):
        raise DigestMismatch(
            f"{source}: {algorithm} mismatch: expected {expected}, got {actual}; "
            f"check {hints.url}, or if the file changed on purpose set {hints.digest} "
            f"to {actual}"
        )
    print(f"{_display_name(part)}: {algorithm} {actual} verified", flush=True)


def looks_like_html(path: Path) -> bool:
    """Whether a file starts like an HTML page (after any whitespace or byte-order mark)."""
    with Path(path).open("rb") as f:
        head = f.read(SNIFF).lstrip(b"\xef\xbb\xbf \t\r\n\f").lower()
    return head.startswith((b"<!doctype html", b"<html"))


def hash_file(path: Path, algorithm: str) -> str:
    """The hex digest of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _Hints:
    """The params keys an error message tells the user to check."""

    def __init__(self, section: str | None, algorithm: str) -> None:
        where = " in params.yaml" if section else ""
        self.url = f"{section}.url{where}" if section else "the URL"
        self.digest = f"{section}.{algorithm}{where}" if section else "the expected digest"


def _check_expected(expected_hex: str) -> str:
    expected = expected_hex.lower()
    if len(expected) < MIN_PREFIX or not re.fullmatch(r"[0-9a-f]+", expected):
        # An empty or tiny prefix would accept any file, which defeats the check.
        raise FetchError(f"expected digest {expected_hex!r}: need at least {MIN_PREFIX} hex digits")
    return expected


def is_local(source: str) -> bool:
    scheme = urlparse(source).scheme
    return scheme in ("", "file") or len(scheme) == 1  # one letter: a Windows drive


def local_path(source: str) -> Path:
    parsed = urlparse(source)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    # ~ as a shell reads it; relative paths are taken from the cwd, the repo root.
    return Path(source).expanduser()


def _http_url(source: str, hints: _Hints) -> str:
    scheme = urlparse(source).scheme
    if scheme not in ("http", "https"):
        raise SourceError(f"{source}: unsupported URL scheme {scheme!r}; use http(s)://, "
                          f"file:// or a plain path in {hints.url}")
    return source


def _copy_local(path: Path, part: Path, hints: _Hints) -> None:
    try:
        src = path.open("rb")
    except FileNotFoundError:
        raise SourceError(f"{path}: local file not found (relative paths start at {Path.cwd()}); "
                          f"check {hints.url}") from None
    except OSError as err:
        raise SourceError(f"{path}: cannot read local file ({err.strerror}); "
                          f"check {hints.url}") from None
    with src, part.open("wb") as out, _Progress(part, str(path), path.stat().st_size, 0) as bar:
        _copy(src.read, out, bar)


def _download(url: str, part: Path, hints: _Hints) -> bool:
    """Download with retries and exponential backoff, resuming where the last attempt stopped.
    Returns whether the server labelled the body text/html."""
    part.write_bytes(b"")  # a stale .part from a killed run may not match today's file
    last: _Transient | None = None
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _download_once(url, part, hints)
        except _Transient as err:
            last = err
        if attempt < ATTEMPTS:
            delay = BASE_DELAY * 2 ** (attempt - 1)
            print(f"warning: {url}: {last}; retrying in {delay:g}s ({attempt}/{ATTEMPTS})",
                  file=sys.stderr, flush=True)
            time.sleep(delay)
    raise DownloadError(f"{url}: gave up after {ATTEMPTS} attempts; last error: {last}; "
                        f"check the network and {hints.url}, then re-run")


def _download_once(url: str, part: Path, hints: _Hints) -> bool:
    have = part.stat().st_size
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    response = _open(Request(url, headers=headers), url, hints, part)
    with response:
        offset = _resume_offset(response, have)
        length = response.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = None if length is None else offset + length
        labelled_html = response.headers.get_content_type() == "text/html"
        with part.open("r+b") as out, _Progress(part, url, total, offset) as bar:
            out.truncate(offset)  # 200: start over; 206: append after the bytes we have
            out.seek(offset)
            got = _copy(_network_read(response), out, bar)
    if length is not None and got < length:
        # http.client's read() returns b"" quietly when the connection drops early.
        raise _Transient(f"connection dropped after {offset + got} of {total} bytes")
    return labelled_html


def _open(request: Request, url: str, hints: _Hints, part: Path) -> http.client.HTTPResponse:
    try:
        return urlopen(request, timeout=TIMEOUT)
    except HTTPError as err:
        err.close()
        if err.code == 416:  # our Range is past the end: the file changed; start over
            part.write_bytes(b"")
            raise _Transient("HTTP 416 for a resumed download") from None
        if err.code == 429 or err.code >= 500:
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise SourceError(f"HTTP {err.code} {err.reason} for {url}; check {hints.url}") from None
    except URLError as err:
        if isinstance(err.reason, ssl.SSLCertVerificationError):
            raise SourceError(f"{url}: TLS certificate not trusted ({err.reason.verify_message}); "
                              f"check {hints.url}") from None
        raise _Transient(f"cannot connect ({err.reason})") from None
    except (http.client.HTTPException, OSError) as err:
        raise _Transient(f"{type(err).__name__}: {err}") from None


def _resume_offset(response: http.client.HTTPResponse, have: int) -> int:
    """Where the body starts in the file: `have` for a matching 206, else 0."""
    if response.status != 206:
        return 0
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if not match or int(match.group(1)) != have:
        raise _Transient(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
    return have


def _network_read(response: http.client.HTTPResponse) -> Callable[[int], bytes]:
    def read(size: int) -> bytes:
        try:
            return response.read(size)
        except (http.client.HTTPException, OSError) as err:  # resets, timeouts, bad chunks
            raise _Transient(f"{type(err).__name__}: {err}") from None

    return read


def _copy(read: Callable[[int], bytes], out: BinaryIO, bar: _Progress) -> int:
    copied = 0
    while chunk := read(CHUNK):
        out.write(chunk)
        bar.update(len(chunk))
        copied += len(chunk)
    return copied


def _display_name(part: Path) -> str:
    return part.name.removeprefix(".").removesuffix(".part")


class _Progress:
    """One transfer's progress: tqdm's bar on a terminal (dvc repro passes stderr through);
    in a log, like training's batches, a line with the size at the start and one per tenth."""

    def __init__(self, part: Path, source: str, total: int | None, initial: int) -> None:
        self.name, self.total, self.done = _display_name(part), total, initial
        self.bar = None
        if sys.stderr.isatty():
            self.bar = tqdm(total=total, initial=initial, desc=self.name, unit="B", unit_scale=True,
                            unit_divisor=1024, file=sys.stderr, leave=False)
            return
        self.mark = self._mark()
        size = "size unknown" if total is None else size_text(total)
        start = f"resuming at {size_text(initial)} of {size}" if initial else f"fetching {size}"
        print(f"{self.name}: {start} from {source}", flush=True)

    def _mark(self) -> int:
        """Tenths done (or UNSIZED_STEPs without a total): a line is due when it grows."""
        if self.total is None:
            return self.done // UNSIZED_STEP
        return self.done * 10 // self.total if self.total else 10

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        mark = self._mark()
        if mark > self.mark:
            self.mark = mark
            of = "" if self.total is None else f" of {size_text(self.total)} ({self.done * 100 // self.total}%)"
            print(f"{self.name}: {size_text(self.done)}{of}", flush=True)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
