"""DVC's entry points, one module per stage of dvc.yaml, run as `python -m stages.<name>`
from the repo root. Each reads its declared params, calls the `hotdog` library and writes
its declared outputs; the logic lives in the library."""

from hotdog.runner.interpreter import ensure_project_python

# First of all: `dvc` may have found a `python` without the project's packages on PATH.
ensure_project_python()
