"""Stages import only what they use (issue #18): each stage of the tiny project runs in its own
process, as DVC runs it, and reports what it loaded. None loads torch._dynamo, which importing
torchvision, torch.optim or torch.use_deterministic_algorithms would (2 s or more here); the
stages that need no tensors load no torch at all. benchmarks/startup.py has the timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import ENV, REPO, write_params
from synthetic import dataset_files, write_weights, write_zip

from hotdog.core.names import STAGES

NO_TORCH = {"source", "download", "weights", "manifest", "decode", "report"}
# Run the stage as `python -m` does, then say which of these modules it loaded: as it ends
# (run_main ends a finished stage with os._exit, past anything that would run after it).
PROBE = ("import json, os, runpy, sys; end = os._exit; "
         "os._exit = lambda code: (print(json.dumps({m: m in sys.modules for m in "
         "('torch', 'torchvision', 'torch._dynamo')}), flush=True), end(code)); "
         "runpy.run_module(sys.argv[1], run_name='__main__', alter_sys=True)")


def loaded(project: Path, stage: str) -> dict[str, bool]:
    """Which of torch, torchvision and torch._dynamo the stage had loaded when it finished."""
    done = subprocess.run([sys.executable, "-c", PROBE, f"stages.{stage}"], cwd=project,
                          env={**ENV, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{stage} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.splitlines()[-1])


def test_no_stage_loads_dynamo_and_the_light_ones_load_no_torch(tmp_path: Path) -> None:
    files = tmp_path / "files"
    sha1 = write_zip(files / "hotdog.zip", dataset_files({"train": 6, "test": 4}, corrupt=1))
    sha256 = write_weights(files / "weights.pth")
    project = tmp_path / "project"
    project.mkdir()
    write_params(project / "params.yaml", {"data.url": str(files / "hotdog.zip"), "data.sha1": sha1,
                                           "weights.url": str(files / "weights.pth"), "weights.sha256": sha256})
    for stage in STAGES:  # in the pipeline's order: each makes the next one's inputs
        modules = loaded(project, stage)
        assert not modules["torch._dynamo"], f"{stage} loaded torch._dynamo"
        if stage in NO_TORCH:
            assert not modules["torch"], f"{stage} loaded torch, which it does not use"
        else:
            assert modules["torchvision"], f"{stage}: the probe did not see the stage's own imports"
    assert (project / "reports/report.md").is_file()


def test_a_finished_stage_ends_without_pythons_teardown_and_loses_no_output(tmp_path: Path) -> None:
    # Python's exit would walk every object torch made and tear every module down (0.65 s of a
    # torch stage here, which DVC waits for); run_main ends the process once the outputs are
    # written (the exit itself is timed by benchmarks/startup.py). What the stage printed, to a
    # pipe that buffers it, still arrives.
    write_params(tmp_path / "params.yaml")
    code = ("import atexit, sys; from hotdog.runner.stage import run_main; "
            "atexit.register(print, 'teardown ran'); "
            "run_main('x', lambda: (print('work done'), print('a warning', file=sys.stderr))); "
            "print('after run_main')")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**ENV, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["work done"] and done.stderr.splitlines() == ["a warning"]


def test_a_profiled_stage_still_gets_its_profile_written(tmp_path: Path) -> None:
    # `python -m cProfile -o F -m stages.<name>` writes F at the exit that run_main skips
    # otherwise.
    write_params(tmp_path / "params.yaml")
    (tmp_path / "stage.py").write_text("from hotdog.runner.stage import run_main\nrun_main('x', lambda: None)\n")
    done = subprocess.run([sys.executable, "-m", "cProfile", "-o", "stage.prof", "stage.py"], cwd=tmp_path,
                          env={**ENV, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "stage.prof").stat().st_size > 0


def test_the_benchmark_table_has_every_stage_and_the_best_run_in_bold() -> None:
    from benchmarks import startup

    names = [f"{s} {e}" for s in STAGES for e in ("start", "end")] + ["dvc repro", "python", "import torch"]
    rows = startup.table({name: [2.0, 1.5, 3.0] for name in names})
    assert len(rows) == 2 + len(STAGES) + 3
    assert rows[2] == "| `python -m stages.source` | **1.50** (2.00, 1.50, 3.00) | **1.50** (2.00, 1.50, 3.00) |"
