"""The whole chapter, timed (issue #22): a cold `dvc repro` of every stage, and where its
seconds go.

Cold means a fresh copy of this checkout: no outputs, an empty DVC cache, no run cache.
The data is hotdog.zip when one is at hand (--data, else data/raw/hotdog.zip after a `make
run`), or else the photo-sized synthetic set (hotdog make-data: 1,000 train and 400 test
JPEGs per class, the real set's shape) zipped. The weights are a local file (--weights,
else data/weights/resnet18.pth), or else torchvision's ResNet-18 initialised with seed 0.
Neither is fetched: data.url and weights.url name the local files.

Each stage reports its own times from its own process (hotdog.core.events.Timing): when the
process began, its first line of work, for the torch stages the end of their imports and
of their reading (with the device's start beside it), the start of its writing where it has
one, and its end. What is left of the wall time is DVC's: its start, hashing and caching, and each
stage's interpreter exit. The figures go to stdout; --record appends them to
benchmarks/RESULTS.md with a timeline figure beside it.

Run from the repo root: python -m benchmarks.e2e [--data ZIP|FOLDER] [--weights FILE] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

from benchmarks.tiny import ENV, write_params
from hotdog.core import events
from hotdog.core.files import atomic_path, file_digest, write_json
from hotdog.core.names import RUNS, STAGES
from hotdog.data.archive import kind_of_archive, opened
from hotdog.data.layout import is_image_name

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
# What a copy of the checkout leaves out when git cannot list its files.
NOT_COPIED = (".git", ".venv", ".whl", ".hotdog", "__pycache__", "data", "models", "metrics", "reports", "scored")


class StageTimes(NamedTuple):
    """One stage's seconds, from its Timing event, relative to the start of `dvc repro`."""

    stage: str
    began: float | None  # its process started (None where the OS does not say)
    started: float  # its first line of work
    writing: float | None  # its outputs began (None: it writes as it works)
    finished: float
    imported: float | None = None  # a torch stage's imports done (None: it marks none)
    ready: float | None = None  # a torch stage's inputs read and device started

    @property
    def startup(self) -> float | None:
        return None if self.began is None else self.started - self.began

    @property
    def imports(self) -> float | None:
        return None if self.imported is None else self.imported - self.started

    @property
    def reading(self) -> float | None:
        return None if self.ready is None else self.ready - (self.imported or self.started)

    @property
    def work_began(self) -> float:
        """Its first line, or its last mark before the work proper."""
        return self.ready or self.imported or self.started

    @property
    def work(self) -> float:
        return (self.writing if self.writing is not None else self.finished) - self.work_began

    @property
    def writes(self) -> float:
        return 0.0 if self.writing is None else self.finished - self.writing

    @property
    def in_process(self) -> float:
        return self.finished - (self.began if self.began is not None else self.started)


def copy_checkout(source: Path, dest: Path) -> None:
    """source's files as a clone has them (plus new files git does not ignore), or, without
    git (a device machine's copy of a working tree), everything but NOT_COPIED."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=source,
                            capture_output=True, text=True) if shutil.which("git") else None
    if listed is not None and listed.returncode == 0:
        for rel in listed.stdout.splitlines():
            if (source / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / rel, dest / rel)
    else:
        copy_without_git(source, dest)


def copy_without_git(source: Path, dest: Path) -> None:
    """source's files but its top-level NOT_COPIED and every __pycache__."""
    def skipped(folder: str, names: list[str]) -> list[str]:
        top = Path(folder) == source
        return [n for n in names if n == "__pycache__" or (top and n in NOT_COPIED)]

    shutil.copytree(source, dest, ignore=skipped, dirs_exist_ok=True)


def make_project(dest: Path, overrides: dict) -> Path:
    """A fresh project at dest: this checkout, its params set by `overrides`, committed (DVC's
    experiments and the report's model card read the commit) or, without git, DVC told so."""
    copy_checkout(REPO, dest)
    write_params(dest, overrides)
    if shutil.which("git"):
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "e2e benchmark project"]):
            subprocess.run(["git", *args], cwd=dest, env=ENV, check=True, capture_output=True)
    else:
        subprocess.run([sys.executable, "-m", "dvc", "config", "core.no_scm", "true"], cwd=dest, env=ENV, check=True)
    return dest


def synthetic_zip(dest: Path, train: int, test: int) -> Path:
    """hotdog make-data's photo-sized JPEGs (per class), zipped as hotdog.zip is: hotdog/train/..."""
    photos = dest / "photos" / "hotdog"
    subprocess.run([sys.executable, "-m", "hotdog.data.synthetic", str(photos), "--train", str(train),
                    "--test", str(test), "--format", "jpg"], env=ENV, check=True)
    archive = dest / "hotdog.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # JPEGs do not deflate
        for path in sorted(photos.rglob("*.jpg")):
            zf.write(path, path.relative_to(photos.parent).as_posix())
    shutil.rmtree(dest / "photos")
    return archive


def stand_in_weights(dest: Path) -> Path:
    """torchvision's ResNet-18, initialised with seed 0: the shapes of the ImageNet weights."""
    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), dest)
    return dest


def data_params(data: Path) -> tuple[dict, str]:
    """The params that point data.url at a local archive (with its SHA-1) or folder, and words for it."""
    if data.is_dir():
        return {"data.url": str(data), "data.sha1": None}, f"the folder {data}"
    with opened(data, kind_of_archive(data)) as (members, _):
        images = sum(1 for m in members if not m.is_dir and is_image_name(m.name))
    return {"data.url": str(data), "data.sha1": file_digest(data, "sha1")}, f"{data.name} ({images} images)"


def run_repro(project: Path, log: Path) -> tuple[float, list[StageTimes], int]:
    """`python -m dvc repro` in project, with the stages' events on: (its wall seconds, each
    stage's times relative to its start, its exit status). Its whole output goes to `log`;
    each stage's first line is echoed as it starts."""
    env = {**ENV, events.ENV: "1", "PYTHONUNBUFFERED": "1"}
    timings: list[events.Timing] = []
    start = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=project, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            out.write(line)
            event = events.parse(line.rstrip("\n"))
            if isinstance(event, events.Started):
                print(f"  {time.time() - start:6.1f} s  {event.stage}", flush=True)
            elif isinstance(event, events.Timing):
                timings.append(event)
        proc.wait()
    wall = time.time() - start

    def since(t: float | None) -> float | None:
        return None if t is None else t - start

    return wall, [StageTimes(t.stage, since(t.began), since(t.started), since(t.writing), since(t.finished),
                             since(t.imported), since(t.ready)) for t in timings], proc.returncode


def training_figures(project: Path) -> dict:
    """Each training run's speed and the test accuracies, from the metrics the run wrote."""
    figures = {}
    evaluation = json.loads((project / "metrics" / "evaluate.json").read_text())
    for run in RUNS:
        summary = json.loads((project / "metrics" / f"{run}.json").read_text())
        epochs = json.loads((project / "metrics" / f"{run}_epochs.json").read_text())
        walls = [e["examples_per_sec_wall"] for e in epochs]
        steady = walls[1:] or walls  # the first epoch carries the one-off costs
        figures[run] = {"device": summary["device"], "precision": summary["precision"],
                        "augment": summary["augment"], "wall_by_epoch": walls,
                        "steady_wall": sum(steady) / len(steady), "d2l": summary["examples_per_sec"],
                        "train_seconds": summary["train_seconds"],
                        "test_acc": evaluation[run]["accuracy"]}
    return figures


def timeline(stages: list[StageTimes], wall: float, title: str, dest: Path) -> None:
    """The stages as bars on one time axis: start-up, imports, inputs (and the device's start),
    work and writing, and DVC's gaps between."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"start-up": "#b0b0b0", "imports": "#8172b3", "inputs, device": "#55a868", "work": "#4c72b0",
               "writing": "#dd8452"}
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(stages) + 1.6))
    for row, s in enumerate(stages):
        parts = [("start-up", s.began, s.started), ("imports", s.started, s.imported),
                 ("inputs, device", s.imported or s.started, s.ready),
                 ("work", s.work_began, s.writing or s.finished),
                 ("writing", s.writing, s.finished if s.writing is not None else None)]
        for name, a, b in parts:
            if a is not None and b is not None and b > a:
                ax.broken_barh([(a, b - a)], (row - 0.35, 0.7), color=colours[name])
        ax.text(s.finished + wall * 0.005, row, f"{s.in_process:.1f} s", va="center", fontsize=8)
    ax.axvline(wall, color="black", linewidth=1)
    ax.text(wall, -0.6, f"dvc repro ends: {wall:.1f} s ", fontsize=8, ha="right", va="bottom")
    ax.set_yticks(range(len(stages)), [s.stage for s in stages])
    ax.set_ylim(len(stages) - 0.5, -0.9)  # the first stage on top, room for the label above it
    ax.set_xlim(0, wall * 1.1)
    ax.set_xlabel("seconds since `dvc repro` began (the white gaps are DVC's, and each stage's exit)")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=[plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()], labels=list(colours),
              loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(colours), fontsize=8, frameon=False)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def seconds(value: float | None, missing: str = "n/a") -> str:
    return missing if value is None else f"{value:.2f}"


def report(stages: list[StageTimes], wall: float, training: dict) -> list[str]:
    """The figures as markdown lines. imports and inputs are the torch stages' (blank for
    the others, whose imports are in their start-up and whose reading is in their work)."""
    rows = ["| stage | start-up | imports | inputs, device | work | writing | in its process |",
            "|---|---|---|---|---|---|---|"]
    rows += [f"| {s.stage} | {seconds(s.startup)} | {seconds(s.imports, '')} | {seconds(s.reading, '')} | "
             f"{s.work:.2f} | {s.writes:.2f} | {s.in_process:.2f} |" for s in stages]
    in_stages = sum(s.in_process for s in stages)
    rows += [f"| DVC: its start, hashing, caching, each stage's exit | | | | | | {wall - in_stages:.2f} |",
             f"| **cold `dvc repro`, wall** | | | | | | **{wall:.2f}** |", ""]
    for run, t in training.items():
        by_epoch = ", ".join(f"{r:,.0f}" for r in t["wall_by_epoch"])
        steady = ("steady (wall, epochs after the first)" if len(t["wall_by_epoch"]) > 1
                  else "(wall, its only epoch: no steady state, the one-off costs included)")
        rows.append(f"- {run}: **{t['steady_wall']:,.0f} img/s** {steady}, "
                    f"{t['d2l']:,.0f} img/s in steps (d2l's measure), {t['train_seconds']:.1f} s of training; "
                    f"img/s by epoch {by_epoch}; {t['device']}, {t['precision']}, augmented on {t['augment']}; "
                    f"test acc {t['test_acc']:.3f}")
    return rows


def commit() -> str:
    """This checkout's short commit, with "+ uncommitted" when its tracked files differ."""
    if not shutil.which("git"):
        return "unknown (no git)"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + (" + uncommitted" if dirty else "")


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="hotdog.zip, another zip or tar, or a folder of labelled photos "
                        "(default: data/raw/hotdog.zip if present, else the synthetic set)")
    parser.add_argument("--train", type=int, default=1000, help="synthetic train images per class")
    parser.add_argument("--test", type=int, default=400, help="synthetic test images per class")
    parser.add_argument("--weights", type=Path, help="a ResNet-18 state dict "
                        "(default: data/weights/resnet18.pth if present, else a seeded stand-in)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="another param, as YAML (runtime.num_workers=4)")
    parser.add_argument("--work", type=Path, help="where the project and the data go (default: a temporary folder)")
    parser.add_argument("--record", action="store_true", help="append the figures to --results")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--timeline", type=Path, help="the figure (default: with --record, timelines/e2e-<time>.png "
                        "beside --results; without, e2e-<time>.png in the system's temp dir)")
    return parser.parse_args(argv)


def overrides_of(args, data: dict) -> dict:
    from ruamel.yaml import YAML

    sets = {}
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"error: e2e: --set {item!r} is not KEY=VALUE")
        sets[key] = YAML(typ="safe").load(value)
    return {**data, "train.epochs": args.epochs, "train.batch_size": args.batch_size,
            "train.image_size": args.image_size, "train.device": args.device, "train.precision": args.precision,
            **sets}


def timeline_path(args: argparse.Namespace, stamp: str) -> Path:
    """Where the figure goes. Only a recorded run adds it to the repo, beside RESULTS.md; a
    trial run leaves it in the temp dir."""
    if args.timeline:
        return args.timeline
    folder = args.results.parent / "timelines" if args.record else Path(tempfile.gettempdir())
    return folder / f"e2e-{stamp}.png"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for given in (args.data, args.weights):
        if given is not None and not given.exists():
            sys.exit(f"error: e2e: {given} does not exist; pass an existing file, or leave the option out")
    with tempfile.TemporaryDirectory(prefix="hotdog-e2e-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for left in ("project", "photos", "hotdog.zip"):  # an earlier run's: cold means none of them
            path = work / left
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        prep = time.perf_counter()
        data = args.data or next((p for p in [REPO / "data/raw/hotdog.zip"] if p.exists()), None)
        data = data.resolve() if data else synthetic_zip(work, args.train, args.test)
        weights = args.weights or next((p for p in [REPO / "data/weights/resnet18.pth"] if p.exists()), None)
        weights = weights.resolve() if weights else stand_in_weights(work / "resnet18-stand-in.pth")
        data_set, data_words = data_params(data)
        overrides = {**overrides_of(args, data_set), "weights.url": str(weights),
                     "weights.sha256": file_digest(weights, "sha256")}
        code = commit()  # now, as the project copies the code: a commit made during the run is not in it
        project = make_project(work / "project", overrides)
        prep = time.perf_counter() - prep
        print(f"e2e: data {data_words}; a fresh project at {project} ({prep:.1f} s to prepare, not timed below)",
              flush=True)
        log = work / "repro.log"
        wall, stages, status = run_repro(project, log)
        if status != 0:
            sys.exit(f"error: e2e: dvc repro failed (exit {status}); its output:\n{log.read_text()[-4000:]}")
        missing = [s for s in STAGES if s not in {t.stage for t in stages}]
        if missing:
            sys.exit(f"error: e2e: no timing from {', '.join(missing)}: did dvc skip them? Output in {log}")
        training = training_figures(project)

        from benchmarks.bench import machine

        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
        picture = timeline_path(args, stamp)
        picture.parent.mkdir(parents=True, exist_ok=True)
        run = training[RUNS[0]]
        title = (f"cold dvc repro of the whole chapter: {wall:.1f} s ({run['device']}, {run['precision']}, "
                 f"{args.epochs} epochs, {args.image_size} px)")
        timeline(stages, wall, title, picture)
        write_json(picture.with_suffix(".json"), {"wall": wall, "stages": [s._asdict() for s in stages],
                                                  "training": training, "overrides": overrides})
        command = "python -m benchmarks.e2e " + shlex.join(argv if argv is not None else sys.argv[1:])
        lines = [f"Machine: {machine()}. Code: commit {code}. Data: {data_words}; weights: {weights.name}. "
                 f"{args.epochs} epochs, batch {args.batch_size}, {args.image_size} px, device {args.device}, "
                 f"precision {args.precision}{''.join(f', {s}' for s in args.sets)}. A cold `dvc repro` (fresh "
                 f"project, empty cache) of all {len(stages)} stages took **{wall:.1f} s** wall. Seconds:",
                 "", *report(stages, wall, training), ""]
        try:
            shown = picture.relative_to(args.results.parent)
        except ValueError:
            shown = picture
        lines.append(f"![timeline of the run]({shown.as_posix()})")
        print("\n".join(lines))
        if args.record:
            with args.results.open("a") as f:
                f.write(f"\n### {datetime.date.today().isoformat()}: {command.strip()}\n\n" + "\n".join(lines) + "\n")
            print(f"e2e: appended to {args.results}; the timeline is {picture}")
        else:
            print(f"e2e: the timeline is {picture}; --record would append the figures to {args.results}")


if __name__ == "__main__":
    main()
