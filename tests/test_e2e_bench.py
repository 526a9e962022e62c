"""benchmarks/e2e.py, the whole chapter timed: what its entry and figure must hold. It runs
for real, at small sizes, inside the CPU run of benchmarks/gpu.sh (tests/test_bench.py), which
calls check_e2e_entry; its speed figures come from the benchmark itself, never from a test."""

import json
import tempfile
from pathlib import Path

from benchmarks.e2e import REPO, StageTimes, copy_without_git, parse_args, report, timeline_path
from hotdog.core.names import STAGES


def check_e2e_entry(results: str, timeline: Path, images: int, epochs: int) -> None:
    """What an e2e run with --record leaves: an entry naming every stage, a timeline PNG the
    entry links, and raw figures in which each stage's times are its own, in order."""
    assert "python -m benchmarks.e2e " in results
    assert f"Data: hotdog.zip ({images} images)" in results  # the synthetic JPEGs, zipped as hotdog.zip is
    assert "cores" in results and "Code: commit " in results  # the machine and the code are named
    for stage in STAGES:
        assert f"\n| {stage} | " in results
    assert timeline.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"![timeline of the run](timelines/{timeline.name})" in results
    raw = json.loads(timeline.with_suffix(".json").read_text())

    # Each stage's times come from its own process, one stage after another, inside the wall.
    stages = [StageTimes(**s) for s in raw["stages"]]
    assert [s.stage for s in stages] == list(STAGES)
    previous_end = 0.0
    for s in stages:
        assert s.began is not None and previous_end <= s.began <= s.started <= s.finished <= raw["wall"], s
        assert s.writing is None or s.started <= s.writing <= s.finished, s
        previous_end = s.finished
    # The training stages, evaluate and report mark where their writing begins; decode
    # writes as it works. The torch stages mark their imports' end and their inputs', in order.
    assert {s.stage for s in stages if s.writing is not None} == {"finetune", "scratch", "evaluate", "report"}
    torch_stages = {"finetune", "scratch", "evaluate", "export"}
    assert {s.stage for s in stages if s.imported is not None} == torch_stages
    assert {s.stage for s in stages if s.ready is not None} == torch_stages
    for s in stages:
        if s.stage in torch_stages:
            assert s.started < s.imported <= s.ready <= (s.writing or s.finished), s

    training = raw["training"]
    assert training["finetune"]["device"] == "cpu" and training["finetune"]["precision"] == "fp32"
    assert len(training["finetune"]["wall_by_epoch"]) == epochs
    # Steady state leaves out the first epoch, which carries the one-off costs.
    assert training["scratch"]["steady_wall"] == sum(training["scratch"]["wall_by_epoch"][1:]) / (epochs - 1)


def test_the_table_adds_up_to_the_wall_time():
    stages = [StageTimes("a", 0.5, 1.0, None, 2.0), StageTimes("b", 2.5, 2.75, 3.0, 4.0),
              StageTimes("t", 4.5, 4.75, 7.0, 7.5, imported=5.75, ready=6.25)]
    rows = report(stages, 8.0, {})
    assert rows[2] == "| a | 0.50 |  |  | 1.00 | 0.00 | 1.50 |"
    assert rows[3] == "| b | 0.25 |  |  | 0.25 | 1.00 | 1.50 |"
    # A torch stage: start-up, imports, inputs, then its work from its inputs to its writing.
    assert rows[4] == "| t | 0.25 | 1.00 | 0.50 | 0.75 | 0.50 | 3.00 |"
    assert rows[5].endswith("| 2.00 |")  # DVC's share: 8.0 - 1.5 - 1.5 - 3.0
    assert "**8.00**" in rows[6]
    # Where the OS gives no process start, the stage's time counts from its first line of work.
    unknown = StageTimes("c", None, 1.0, None, 3.0)
    assert unknown.startup is None and unknown.in_process == 2.0
    assert report([unknown], 3.0, {})[2] == "| c | n/a |  |  | 2.00 | 0.00 | 2.00 |"


def test_without_git_the_copy_leaves_out_only_the_top_levels_outputs(tmp_path):
    # A device machine's copy of the working tree may have no git to list its files.
    source = tmp_path / "checkout"
    for rel in ("hotdog/data/layout.py", "stages/decode.py", "data/raw/hotdog.zip", "models/finetune.pt",
                ".git/HEAD", ".venv/bin/python", "hotdog/__pycache__/x.pyc", "params.yaml"):
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_text(rel)
    copy_without_git(source, tmp_path / "copy")
    copied = sorted(p.relative_to(tmp_path / "copy").as_posix() for p in (tmp_path / "copy").rglob("*") if p.is_file())
    assert copied == ["hotdog/data/layout.py", "params.yaml", "stages/decode.py"]


def test_a_one_epoch_run_claims_no_steady_rate():
    figures = {"device": "cpu", "precision": "fp32", "augment": "workers", "d2l": 12.0, "train_seconds": 3.0,
               "test_acc": 0.5}
    one = report([], 1.0, {"finetune": {**figures, "wall_by_epoch": [10.0], "steady_wall": 10.0}})[-1]
    assert "**10 img/s** (wall, its only epoch: no steady state, the one-off costs included)" in one
    two = report([], 1.0, {"finetune": {**figures, "wall_by_epoch": [10.0, 20.0], "steady_wall": 20.0}})[-1]
    assert "**20 img/s** steady (wall, epochs after the first)" in two and "img/s by epoch 10, 20;" in two


def test_only_a_recorded_run_puts_its_timeline_in_the_repo(tmp_path):
    trial = timeline_path(parse_args([]), "stamp")
    assert trial == Path(tempfile.gettempdir()) / "e2e-stamp.png" and REPO not in trial.parents
    recorded = timeline_path(parse_args(["--record", "--results", str(tmp_path / "R.md")]), "stamp")
    assert recorded == tmp_path / "timelines" / "e2e-stamp.png"
    chosen = timeline_path(parse_args(["--timeline", str(tmp_path / "t.png")]), "stamp")
    assert chosen == tmp_path / "t.png"
