"""The benchmark's two sides run, on tiny data; its speed figures come from `make bench`."""

import os
import subprocess
import sys

import pytest
from conftest import REPO
from synthetic import dataset_files, write_tree, write_weights
from torchvision import transforms as T

from benchmarks import bench
from benchmarks.seed import seed_transforms


def test_seed_transforms_are_the_seeds():
    train, test = seed_transforms()
    assert [type(t) for t in train.transforms] == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    assert train.transforms[0].size == (224, 224)
    assert test.transforms[0].size == [256, 256] and test.transforms[1].size == (224, 224)


def test_bench_runs_both_sides_and_records(tmp_path, monkeypatch, capsys):
    data = write_tree(tmp_path, dataset_files({"train": 4, "test": 3}))
    weights = tmp_path / "w.pth"
    write_weights(weights)
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "RESULTS.md")
    bench.main(["--data", str(data), "--weights", str(weights), "--image-size", "32",
                "--batch-size", "4", "--record"])
    out = capsys.readouterr().out
    assert "| seed (d2l's code, fp32) |" in out and "| project / seed |" in out
    recorded = (tmp_path / "RESULTS.md").read_text()
    assert "python -m benchmarks.bench --data" in recorded and "| project / seed |" in recorded


def test_bench_names_missing_inputs(tmp_path):
    with pytest.raises(SystemExit, match=r"train is missing; run `make run` first"):
        bench.main(["--data", str(tmp_path / "nothing"), "--weights", str(tmp_path / "w.pth")])


def test_the_gpu_script_runs_through_on_the_cpu(tmp_path):
    # The script the device machine runs (benchmarks/gpu.sh), shrunk by its knobs: its
    # CUDA checks fall back to CPU-vs-CPU here, so this proves the plumbing, not the speed.
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "GPU_BENCH_WORK": str(tmp_path / "work"), "GPU_BENCH_RESULTS": str(tmp_path / "RESULTS.md"),
           "GPU_CHECK_ARGS": "12 32 4", "GPU_BENCH_TRAIN": "3", "GPU_BENCH_TEST": "2", "GPU_BENCH_EPOCHS": "1"}
    done = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    check = (tmp_path / "out/cuda_check.log").read_text()
    assert "resized_crops on cpu vs cpu: max difference 0 level(s)" in check and "FAILED" not in check
    assert "| project / seed |" in (tmp_path / "out/bench.log").read_text()
    recorded = (tmp_path / "out/RESULTS.md").read_text()
    assert "Project wall ex/s by epoch:" in recorded and (tmp_path / "RESULTS.md").read_text() == recorded
