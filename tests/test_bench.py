"""The benchmark's two sides run, on tiny data; its speed figures come from `make bench`."""

import subprocess
import sys

import pytest
from conftest import ENV, REPO
from limits import E2E
from synthetic import dataset_files, write_tree, write_weights
from test_e2e_bench import check_e2e_entry
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
                "--batch-size", "4", "--bare-images", "8", "--record"])
    out = capsys.readouterr().out
    assert "| seed (d2l's code, fp32) |" in out and "| project / seed |" in out
    assert "| bare steps (channels_last, " in out and "| project / bare steps |" in out
    recorded = (tmp_path / "RESULTS.md").read_text()
    assert "python -m benchmarks.bench --data" in recorded and "| project / seed |" in recorded


def test_bench_names_missing_inputs(tmp_path):
    with pytest.raises(SystemExit, match=r"train is missing; run `make run` first"):
        bench.main(["--data", str(tmp_path / "nothing"), "--weights", str(tmp_path / "w.pth")])


@pytest.mark.timeout(E2E)  # a whole `dvc repro` among the rest
def test_the_gpu_script_runs_through_on_the_cpu(tmp_path):
    # The script the device machine runs (benchmarks/gpu.sh), shrunk by its knobs: its
    # CUDA checks fall back to CPU-vs-CPU here, so this proves the plumbing, not the speed.
    env = {**ENV, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "GPU_BENCH_WORK": str(tmp_path / "work"), "GPU_BENCH_RESULTS": str(tmp_path / "RESULTS.md"),
           "GPU_CHECK_ARGS": "12 32 4", "GPU_BENCH_TRAIN": "3", "GPU_BENCH_TEST": "2", "GPU_BENCH_EPOCHS": "1",
           "GPU_BENCH_ARGS": "--image-size 32 --batch-size 4 --bare-images 8",
           "GPU_STEP_ARGS": "--batch-size 4 --image-size 32 --steps 5 --repeats 2 --device cpu --precision fp32 "
                            "--start-repeats 1 --start-mib 8",
           "GPU_E2E_ARGS": "--train 6 --test 4 --epochs 2 --batch-size 8 --image-size 32 --device cpu "
                           "--precision fp32 --set runtime.num_workers=1"}
    done = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    check = (tmp_path / "out/cuda_check.log").read_text()
    assert "resized_crops on cpu vs cpu: max difference 0 level(s)" in check and "FAILED" not in check
    assert "TorchScript export on cpu vs cpu: max difference 0.0e+00 in a probability (ok)" in check
    assert "host waits in a training step: not counted (torch counts them on CUDA only)" in check
    bench_log = (tmp_path / "out/bench.log").read_text()
    assert "| project / seed |" in bench_log and "| project / bare steps |" in bench_log
    recorded = (tmp_path / "out/RESULTS.md").read_text()
    assert "Project wall ex/s by epoch:" in recorded and (tmp_path / "RESULTS.md").read_text() == recorded
    # The step candidates: the CPU runs those it can and says which it cannot.
    assert "| fused |" in recorded and "| graph, autotuner | | | CUDA only: not run here |" in recorded
    assert "The project's step run again: bit-identical" in recorded
    assert "and starting cpu, in new processes, median of 1: " in recorded  # the probe CUDA's start gets
    # The whole chapter, timed: a cold `dvc repro` of every stage, with its timeline.
    timelines = list((tmp_path / "timelines").glob("e2e-*.png"))
    assert len(timelines) == 1
    assert (tmp_path / "out/e2e-timeline.png").read_bytes() == timelines[0].read_bytes()
    check_e2e_entry(recorded, timelines[0], images=20, epochs=2)
