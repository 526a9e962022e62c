"""`make worker` (`hotdog worker`): run flow runs from a Prefect work pool in this clone.
It creates the process work pool named in prefect.yaml if it is missing, applies prefect.yaml's
deployments and starts a worker here that takes their runs one at a time. Run from the repo root.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

PREFECT_FILE = "prefect.yaml"
POOL_TYPE = "process"
# The pull step reads the clone's root from here; only a worker started by start_worker sets it.
PROJECT_ENV = "HOTDOG_PROJECT"
STOP_SECONDS = 30  # how long a worker may take to stop before it is killed


class WorkerError(Exception):
    """The worker cannot be set up; the message says why and what to do."""


def project_root(cwd: Path | None = None) -> Path:
    """The clone the worker serves: the current directory, which must hold prefect.yaml and dvc.yaml."""
    root = (cwd or Path.cwd()).resolve()
    if not (root / PREFECT_FILE).is_file() or not (root / "dvc.yaml").is_file():
        raise WorkerError(f"{root} is not the hotdog repo's root (no {PREFECT_FILE} and dvc.yaml there); "
                          "run the worker from the root of a clone")
    return root


def pool_name(project: Path) -> str:
    """The one work pool that prefect.yaml's deployments name."""
    from ruamel.yaml import YAML

    deployments = YAML(typ="safe").load((project / PREFECT_FILE).read_text()).get("deployments") or []
    pools = {(d.get("work_pool") or {}).get("name") for d in deployments}
    if len(pools) != 1 or None in pools:
        raise WorkerError(f"{project / PREFECT_FILE}: every deployment must name the same work pool "
                          f"(work_pool: name:), found {sorted(map(str, pools))}")
    return pools.pop()


def ensure_pool(name: str) -> bool:
    """Create the process work pool `name` on the current Prefect server if it is missing;
    True if it was created. Through the client, not `prefect work-pool create`: that CLI
    asks Prefect's online registry for pool types first, and an existing pool is its error."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=name, type=POOL_TYPE,
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
            return True
        except ObjectAlreadyExists:
            kind = client.read_work_pool(name).type
    if kind != POOL_TYPE:
        raise WorkerError(f"work pool {name!r} exists as a {kind!r} pool; this worker runs a {POOL_TYPE!r} pool. "
                          f"Rename the pool in {PREFECT_FILE}, or delete it (prefect work-pool delete {name})")
    return False


def deploy(project: Path, env: dict[str, str] | None = None) -> str:
    """`prefect deploy --all` from prefect.yaml, with no prompts; returns its output."""
    run = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=project,
                         env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise WorkerError(f"prefect deploy --all failed in {project}:\n{run.stdout}{run.stderr}")
    return run.stdout


def prepare(project: Path, env: dict[str, str] | None = None) -> str:
    """The pool (created if missing) and the deployments, on the current server; the pool's name."""
    pool = pool_name(project)
    if ensure_pool(pool):
        print(f"Created the {POOL_TYPE} work pool {pool!r}", flush=True)
    deploy(project, env)
    print(f"Deployed {PREFECT_FILE}'s flows to the work pool {pool!r}", flush=True)
    return pool


def worker_name(project: Path) -> str:
    """The clone and the machine, as the UI lists the pool's workers (a name holds no '/')."""
    return f"{project.name}@{socket.gethostname()}"


def start_worker(project: Path, pool: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """`prefect worker start` for `pool`, in the clone, taking one flow run at a time."""
    # A clone's runs share its workspace (params.yaml, DVC's outputs), so a second run must wait
    # for the first; Prefect keeps it Scheduled until this worker has a free slot.
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", POOL_TYPE,
               "--limit", "1", "--name", worker_name(project), "--no-create-pool-if-not-found",
               "--install-policy", "never"]  # offline: process workers come with Prefect
    env = {**(os.environ if env is None else env), PROJECT_ENV: str(project),
           # Prefect would otherwise `uv run` the flow when uv is on PATH and this is enabled,
           # re-syncing the venv that make built with pip (and dropping its extras).
           "PREFECT_RUNNER_AUTO_INSTALL_DEPENDENCIES": "false"}
    return subprocess.Popen(command, cwd=project, env=env, **popen)


def enter_project() -> dict[str, str]:
    """prefect.yaml's pull step: enter the clone whose worker took the flow run.

    The deployment is shared by every worker machine, so it names no path; each worker says
    where its clone is (HOTDOG_PROJECT). The process worker starts the step in a temporary
    directory, so the worker's own working directory is not at hand here."""
    project = os.environ.get(PROJECT_ENV)
    if not project:
        raise WorkerError(f"{PROJECT_ENV} is not set, so this flow run does not know which clone to run in; "
                          "start workers with `make worker` (or `hotdog worker`) from a clone's root")
    root = Path(project)
    if not (root / "dvc.yaml").is_file():
        raise WorkerError(f"{PROJECT_ENV}={project} is not a clone of the hotdog repo (no dvc.yaml there)")
    os.chdir(root)
    return {"directory": str(root)}


def stop(worker: subprocess.Popen) -> int:
    """Wait for a worker that was sent Ctrl-C; kill it if it outlives STOP_SECONDS."""
    try:
        return worker.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGKILL)
        return worker.wait()


def main(argv: list[str] | None = None) -> None:
    """`hotdog worker`: set up the pool and deployments, then run the worker until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="hotdog worker", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from hotdog.runner.prefect_server import running_server

    try:
        project = project_root()
        # running_server puts the URL in the environment, but this process's Prefect settings
        # were read at import: without this, its client would start a throwaway server.
        with running_server() as api_url, temporary_settings(updates={PREFECT_API_URL: api_url}):
            pool = prepare(project)
            print(f"Starting a worker for the pool {pool!r} in {project}; runs come from {api_url} "
                  "(Ctrl-C stops it)", flush=True)
            worker = start_worker(project, pool)
            try:
                code = worker.wait()
            except KeyboardInterrupt:  # the worker, in our process group, got the Ctrl-C too
                code = stop(worker)
            except SystemExit:  # a SIGTERM to this process alone (running_server): the worker did not get it
                worker.terminate()
                stop(worker)
                raise
    except WorkerError as err:
        sys.exit(f"error: worker: {err}")
    sys.exit(code)


if __name__ == "__main__":
    main()
