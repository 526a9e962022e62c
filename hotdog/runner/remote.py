"""Pushing a run's outputs to the default DVC remote, with one line that says what to check
when it fails. The pipeline flow's `push` uses it; so could any command."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dvc.config import Config, ConfigError

from hotdog.runner.dvc_run import stream_dvc

NO_REMOTE = ("no default DVC remote to push to: add one with `dvc remote add -d <name> s3://<bucket>/<path>` "
             "(for MinIO or Ceph also `dvc remote modify <name> endpointurl <url>`), commit .dvc/config, then "
             "`dvc push`: this run's outputs are in the local cache")


class PushFailed(RuntimeError):
    """`dvc push` failed or had nowhere to go; the message says what to do."""


def default_remote(project: Path) -> tuple[str, str]:
    """The name and URL of the remote `dvc push` would use, from every level of DVC's config
    (.dvc/config, config.local, global, system); PushFailed when there is none."""
    try:
        config = Config(dvc_dir=str(project / ".dvc"))
    except ConfigError as err:
        raise PushFailed(f"cannot push: {err}; fix it with `dvc remote modify` or `dvc config`") from None
    name = config["core"].get("remote")
    if not name:
        raise PushFailed(NO_REMOTE)
    if name not in config["remote"]:
        raise PushFailed(f"the default DVC remote '{name}' (core.remote) is not defined: add it with "
                         f"`dvc remote add -d {name} s3://<bucket>/<path>`, or pick another with `dvc remote default`")
    return name, config["remote"][name]["url"]


def push_failure(name: str, url: str, said: str) -> str:
    """The one line for a failed `dvc push`, with what to check for this kind of remote."""
    if url.startswith("s3://"):
        check = (f"if it is the credentials, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment "
                 f"(or `dvc remote modify --local {name} access_key_id ...` and `... secret_access_key ...`, "
                 f"which stay out of git); else check the bucket and endpointurl (`dvc remote list`, "
                 f"`dvc config -l`)")
    else:
        check = f"check that this machine can reach and write {url} (`dvc remote list`)"
    return f"dvc push to remote '{name}' ({url}) failed: {said}; {check}; then `dvc push` (no need to run again)"


def push_outputs(project: Path, on_line: Callable[[str], None]) -> str:
    """`dvc push` every output dvc.lock records to the default remote, its output lines to
    on_line; returns the remote's name, or raises PushFailed."""
    name, url = default_remote(project)
    # DVC's own words go to the log and are never parsed (tests/test_seams.py).
    returncode = stream_dvc(["push"], project, on_line)
    if returncode != 0:
        raise PushFailed(push_failure(name, url, f"exit status {returncode}, dvc's error is in the log above"))
    return name
