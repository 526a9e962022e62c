"""The benchmark's two sides run, on tiny data; its speed figures come from `make bench`."""


import pytest
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
