"""The project's reports/ folder over http on 127.0.0.1, for as long as `make ui` runs: the
Prefect UI loads the report's figures from it (a browser will not load file:// links from a
web page). flows/ui.py starts it; the flow runs it serves read its address from REPORTS_URL_ENV."""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

REPORTS_URL_ENV = "HOTDOG_REPORTS_URL"  # the served reports/ folder's base URL, no trailing slash
HOST = "127.0.0.1"  # loopback only: the files are for this machine's browser
PREFERRED_PORT = 4201  # beside Prefect's 4200, so links in past runs survive a restart; else a free one


class _Handler(SimpleHTTPRequestHandler):
    """Files under the served folder (its `directory` confines the paths), GET and HEAD only."""

    def list_directory(self, path):
        self.send_error(404, "no directory listings here")
        return None

    def log_message(self, format: str, *args: object) -> None:
        pass  # every image load would print a line into `make ui`'s output


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a browser holding a connection open does not hold up the exit


def _bind(handler, port: int) -> _Server:
    """A server on HOST:port, or on a free port when that one is taken (or port is 0)."""
    try:
        return _Server((HOST, port), handler)
    except OSError:
        if port == 0:
            raise
        return _Server((HOST, 0), handler)


@contextmanager
def serving_reports(folder: Path, port: int = PREFERRED_PORT) -> Iterator[str]:
    """Serve the files under `folder` on 127.0.0.1 until the block ends; yield the base URL."""
    handler = functools.partial(_Handler, directory=str(Path(folder).resolve()))
    server = _bind(handler, port)
    # A short poll interval: shutdown() waits up to one interval for the loop to notice.
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="reports-server", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def reports_url() -> str | None:
    """The served reports/ folder's base URL, when this process runs under `make ui`."""
    return os.environ.get(REPORTS_URL_ENV, "").rstrip("/") or None


def file_url(base: str, folder: Path, file: Path) -> str:
    """The URL of `file` (under the served `folder`) on the server at `base`. Its query names the
    content, so a browser that cached an earlier run's figure at the same path fetches this one."""
    rel = file.relative_to(folder).as_posix()
    version = hashlib.sha256(file.read_bytes()).hexdigest()[:12]
    return f"{base.rstrip('/')}/{quote(rel)}?v={version}"
