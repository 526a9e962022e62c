"""A Prefect server for the flows: the one at PREFECT_API_URL when it answers, else a local
one on loopback, started here and stopped on exit (Ctrl-C and SIGTERM included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

DEFAULT_API_URL = "http://127.0.0.1:4200/api"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
START_TIMEOUT = 120.0  # seconds; a first start creates and migrates the SQLite database
STOP_TIMEOUT = 30.0  # seconds a server may take to stop before it is killed
ANALYTICS_ENV = "PREFECT_SERVER_ANALYTICS_ENABLED"


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
    env = {**os.environ, ANALYTICS_ENV: "false"}  # its telemetry write locks SQLite
    command = [sys.executable, "-m", "prefect", "server", "start",
               "--host", url.hostname, "--port", str(url.port or 4200)]
    with log.open("w") as out:
        # Its own session, out of the terminal's foreground group: Ctrl-C there must reach only
        # the process that serves the flows, whose shutdown (served deployments are paused through
        # the API) needs this server still up. That process stops it after (stop_server).
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not is_up(api_url):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = "".join(log.read_text().splitlines(keepends=True)[-5:])
                raise SystemExit(f"error: prefect server: the Prefect server did not start (see {log}):\n{tail}")
            time.sleep(0.5)
    except BaseException:  # Ctrl-C while it starts, too: the Ctrl-C no longer reaches it
        stop_server(server, timeout=0)
        raise
    return server, log


def stop_server(server: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """Stop a server start_server started, with whatever it started: SIGTERM to its process
    group, then SIGKILL if it is still running after `timeout` seconds."""
    # Its pid names its group, since it leads its own session; the group may have exited already.
    with suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def disable_server_telemetry() -> None:
    """Turn off the telemetry of a Prefect server this process starts, the temporary one that
    Prefect starts for a flow run when no PREFECT_API_URL is set included: offline, each of its
    sends logs an ERROR, and its writes lock SQLite. That server takes this process's
    environment (with the Prefect settings set in this process on top)."""
    os.environ[ANALYTICS_ENV] = "false"


@contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """Within the block, SIGTERM raises SystemExit, so that `finally` clauses run (by default it
    ends the process at once). Prefect's serve() puts its own handler in while it serves."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return

    def on_sigterm(signum, frame):
        raise SystemExit(128 + signum)  # the status a shell reports for a process SIGTERM ended

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def configured_api_url() -> str:
    """PREFECT_API_URL from the environment or the Prefect profile, else the local default."""
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url or DEFAULT_API_URL)


@contextmanager
def running_server() -> Iterator[str]:
    """The API URL of a reachable Prefect server, started on loopback if none answers; a
    server started here is stopped on exit, by Ctrl-C or SIGTERM too (not by SIGKILL: it runs
    on, and the next start finds it answering). PREFECT_API_URL is set to it for subprocesses."""
    api_url = configured_api_url()
    server = None
    with stopping_on_sigterm():
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
                stop_server(server)
