"""A Prefect server for the flows: the one at PREFECT_API_URL when it answers, else a local
one on loopback, started here and stopped on exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

DEFAULT_API_URL = "http://127.0.0.1:4200/api"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT = 120.0  # seconds; a first start creates and migrates the SQLite database


def is_up(api_url: str) -> bool:
    """True when a Prefect API answers its health check at api_url."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def server_log(port: int) -> Path:
    """Where a server started here writes its log: PREFECT_HOME, beside its database (one
    file a port, overwritten by the next start), so a test's server leaves nothing behind."""
    from prefect.settings import get_current_settings

    home = Path(get_current_settings().home).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home / f"hotdog-prefect-server-{port}.log"


def start_server(api_url: str) -> tuple[subprocess.Popen, Path]:
    """`prefect server start` on api_url's loopback host and port; returns it and its log."""
    url = urlparse(api_url)
    if url.hostname not in LOOPBACK:
        raise SystemExit(f"error: prefect server: no Prefect server answers at {api_url} (PREFECT_API_URL), and "
                         "only a loopback one can be started here; start that server or unset it")
    log = server_log(url.port or 4200)
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")  # its telemetry write locks SQLite
    command = [sys.executable, "-m", "prefect", "server", "start",
               "--host", url.hostname, "--port", str(url.port or 4200)]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while not is_up(api_url):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            tail = "".join(log.read_text().splitlines(keepends=True)[-5:])
            raise SystemExit(f"error: prefect server: the Prefect server did not start (see {log}):\n{tail}")
        time.sleep(0.5)
    return server, log


def configured_api_url() -> str:
    """PREFECT_API_URL from the environment or the Prefect profile, else the local default."""
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or DEFAULT_API_URL)


@contextmanager
def running_server() -> Iterator[str]:
    """The API URL of a reachable Prefect server, started on loopback if none answers; a
    server started here is stopped on exit. PREFECT_API_URL is set to it for subprocesses."""
    api_url = configured_api_url()
    server = None
    if is_up(api_url):
        print(f"Using the Prefect server at {api_url}", flush=True)
    else:
        print(f"Starting a Prefect server at {api_url} ...", flush=True)
        server, log = start_server(api_url)
        print(f"Prefect server up (log: {log})", flush=True)
    # Flow runs start in subprocesses, which read the URL from the environment.
    os.environ["PREFECT_API_URL"] = api_url
    try:
        yield api_url
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
