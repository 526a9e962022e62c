"""Real HTTP servers on 127.0.0.1 for offline tests: each is a context manager that
serves the files under a folder and yields its base URL, e.g. f"{url}/hotdog.zip".

Pass `log=[]` to any of them to get one `Seen` record per request, appended before
the response goes out.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

_RANGE = re.compile(r"bytes=(\d+)-")
# Debian's Chromium for the browser tests (Playwright never downloads one here). As root, in
# a sandbox with no network: no sandbox, no GPU, no background traffic.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Seen:
    """One request as the server saw it: path, Range header, status sent, body bytes sent."""

    path: str
    range: str | None
    status: int
    sent: int


@contextmanager
def serve_directory(
    root: Path, *, log: list[Seen] | None = None, content_type: str = "application/octet-stream"
) -> Iterator[str]:
    """Serve files under `root`, honouring `Range: bytes=N-` with 206; yield the base URL.

    Every file goes out labelled `content_type`: "text/html" plays a server that answers
    a file's URL with a login or error page."""
    with _serve(root, log, ranges=True, content_type=content_type) as url:
        yield url


@contextmanager
def serve_ignoring_range(root: Path, *, log: list[Seen] | None = None) -> Iterator[str]:
    """Serve files under `root`, always answering 200 with the whole body."""
    with _serve(root, log, ranges=False) as url:
        yield url


@contextmanager
def serve_truncating(
    root: Path, *, times: int | None = 1, ranges: bool = True, log: list[Seen] | None = None
) -> Iterator[str]:
    """Drop the connection halfway through the body for the first `times` requests (None: all)."""
    with _serve(root, log, ranges=ranges, truncate=times) as url:
        yield url


@contextmanager
def serve_unavailable(
    root: Path, *, times: int = 1, log: list[Seen] | None = None
) -> Iterator[str]:
    """Answer 503 to the first `times` requests, then serve files under `root` normally."""
    with _serve(root, log, ranges=True, unavailable=times) as url:
        yield url


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, log: list[Seen] | None, ranges: bool,
                 truncate: int | None, unavailable: int, content_type: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)  # port 0: the OS picks a free one
        self.root = Path(root).resolve()
        self.log = log if log is not None else []
        self.ranges, self.truncate, self.unavailable = ranges, truncate, unavailable
        self.content_type = content_type
        self.count = 0
        self.lock = threading.Lock()

    def next_index(self) -> int:
        with self.lock:
            self.count += 1
            return self.count - 1

    def handle_error(self, request, client_address) -> None:
        pass  # a client hanging up mid-body is what some tests are about; keep output clean


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        server = self.server
        index = server.next_index()
        if index < server.unavailable:
            return self._fail(503)
        file = (server.root / unquote(urlparse(self.path).path).lstrip("/")).resolve()
        if not file.is_relative_to(server.root) or not file.is_file():
            return self._fail(404)
        body = file.read_bytes()
        match = _RANGE.fullmatch(self.headers.get("Range", "")) if server.ranges else None
        start = int(match.group(1)) if match else 0
        if start >= len(body) > 0:
            return self._fail(416)
        end = len(body)
        if server.truncate is None or index < server.truncate:
            end = start + (len(body) - start) // 2  # then the connection closes
        self._record(206 if match else 200, end - start)
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Type", server.content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:end])

    def _fail(self, status: int) -> None:
        self._record(status, 0)
        self.send_error(status)

    def _record(self, status: int, sent: int) -> None:
        # Before any byte goes out, so the record is there by the time the client is done.
        self.server.log.append(Seen(self.path, self.headers.get("Range"), status, sent))

    def log_message(self, format: str, *args: object) -> None:
        pass  # tests assert on `log`, not on stderr chatter


@contextmanager
def _serve(root: Path, log: list[Seen] | None, *, ranges: bool, truncate: int | None = 0,
           unavailable: int = 0, content_type: str = "application/octet-stream") -> Iterator[str]:
    with serving(_Server(root, log, ranges, truncate, unavailable, content_type)) as url:
        yield url


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[str]:
    """`server`, bound to 127.0.0.1, served on a thread: its base URL; shut down on exit."""
    # A short poll interval: shutdown() waits up to one interval for the loop to notice.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
