"""The bad-input matrix (issue #11), each case through a stage's real entry point,
`python -m stages.<name>` in a scratch project: one line on stderr saying what is wrong,
where and what to do, exit status 1, and no output or temporary file left behind.
Also the progress lines the download stage prints in a log."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import pty
import random
import re
import resource
import signal
import struct
import subprocess
import sys
import termios
import zipfile
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import REPO, write_params
from servers import serve_directory
from synthetic import write_zip, write_zip_declaring

from hotdog.core import events
from hotdog.core.names import CLASSES, SPLITS

# A well-formed hotdog.zip's members, three bytes each: enough for every check but decoding.
GOOD = {f"hotdog/{split}/{cls}/{i}.png": b"png" for split in SPLITS for cls in CLASSES for i in (0, 1)}
TOO_LARGE = os.strerror(errno.EFBIG)  # "File too large": what a write past RLIMIT_FSIZE fails with


def run_stage(module: str, cwd: Path, *, fsize: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m <module>` in `cwd`; with `fsize`, no file it writes may grow past that
    many bytes, as on a disk that fills up."""

    def limit_file_size() -> None:
        # Ignored, SIGXFSZ no longer kills the process: the write fails with EFBIG instead.
        # (Python ignores it at start-up anyway; this makes the test not rely on that.)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", module], cwd=cwd, env=stage_env(), capture_output=True,
                          text=True, timeout=300, preexec_fn=None if fsize is None else limit_file_size)


def stage_env() -> dict[str, str]:
    # Without the events variable a stage says why it failed as one line on stderr.
    env = {k: v for k, v in os.environ.items() if k != events.ENV}
    return env | {"PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}


def one_error(result: subprocess.CompletedProcess[str], stage: str) -> str:
    """The stage's error line, after checking it failed with exactly one line on stderr."""
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {stage}: ")
    return lines[0].removeprefix(f"error: {stage}: ")


def left_behind(work: Path, *outputs: str) -> list[str]:
    """Those of `outputs` that exist under `work`, and every temporary file or folder there."""
    temps = [p.relative_to(work).as_posix() for p in work.rglob(".*")
             if ".tmp-" in p.name or p.name.endswith(".part")]
    return [o for o in outputs if (work / o).exists()] + temps


def project(work: Path, overrides: dict) -> Path:
    """A scratch project: the repo's params.yaml, shrunk for tests, with `overrides`."""
    work.mkdir(parents=True, exist_ok=True)
    write_params(work / "params.yaml", overrides)
    return work


DOWNLOAD_OUTPUTS = ("data/raw/hotdog.zip", "data/hotdog")
WEIGHTS_OUTPUTS = ("data/weights/resnet18.pth",)


# --- a page or nothing where the file should be ---------------------------------------


@pytest.mark.parametrize("body, label", [
    (b"\n  <!DOCTYPE HTML>\n<html><body>Sign in</body></html>", "application/octet-stream"),  # the body tells
    (b"Access denied", "text/html"),  # the server's label tells
], ids=["html-body", "html-label"])
def test_download_refuses_an_html_page(tmp_path: Path, body: bytes, label: str) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hotdog.zip").write_bytes(body)
    with serve_directory(tmp_path / "www", content_type=label) as url:
        work = project(tmp_path / "work", {"data.url": f"{url}/hotdog.zip", "data.sha1": "ab" * 20})
        result = run_stage("stages.download", work)
    # Not "sha1 mismatch ... set data.sha1 to <the page's digest>", which would adopt the page.
    assert one_error(result, "download") == (f"{url}/hotdog.zip: the server sent an HTML page, not the file "
                                             "(a login or error page?); check data.url in params.yaml")
    assert left_behind(work, *DOWNLOAD_OUTPUTS) == []


def test_weights_refuses_an_html_page(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "resnet18.pth").write_bytes(b"<html><head><title>404</title></head></html>")
    with serve_directory(tmp_path / "www", content_type="text/html; charset=utf-8") as url:
        work = project(tmp_path / "work", {"weights.url": f"{url}/resnet18.pth", "weights.sha256": "f37072fd"})
        result = run_stage("stages.weights", work)
    assert one_error(result, "weights") == (f"{url}/resnet18.pth: the server sent an HTML page, not the file "
                                            "(a login or error page?); check weights.url in params.yaml")
    assert left_behind(work, *WEIGHTS_OUTPUTS) == []


def test_download_refuses_an_empty_download(tmp_path: Path) -> None:
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "hotdog.zip").write_bytes(b"")
    with serve_directory(tmp_path / "www") as url:
        work = project(tmp_path / "work", {"data.url": f"{url}/hotdog.zip", "data.sha1": "ab" * 20})
        result = run_stage("stages.download", work)
    assert one_error(result, "download") == (f"{url}/hotdog.zip: the download is empty (0 bytes); "
                                             "check data.url in params.yaml")
    assert left_behind(work, *DOWNLOAD_OUTPUTS) == []


@pytest.mark.parametrize("stage, section, digest", [("download", "data", "sha1"), ("weights", "weights", "sha256")])
def test_an_empty_local_file_is_refused(tmp_path: Path, stage: str, section: str, digest: str) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    work = project(tmp_path / "work", {f"{section}.url": empty.as_uri(), f"{section}.{digest}": "ab" * 20})
    result = run_stage(f"stages.{stage}", work)
    assert one_error(result, stage) == (f"{empty.as_uri()}: the file is empty (0 bytes); "
                                        f"check {section}.url in params.yaml")
    assert left_behind(work, *DOWNLOAD_OUTPUTS, *WEIGHTS_OUTPUTS) == []


# --- a zip bomb -----------------------------------------------------------------------


def test_an_archive_declaring_more_than_the_limit_is_refused(tmp_path: Path) -> None:
    # One member claims 10 GiB; the archive itself is a few hundred bytes.
    name = "hotdog/train/hotdog/0.png"
    sha1 = write_zip_declaring(tmp_path / "bomb.zip", GOOD, {name: 10 << 30})
    work = project(tmp_path / "work", {"data.url": (tmp_path / "bomb.zip").as_uri(), "data.sha1": sha1,
                                       "runtime.max_unpacked_gib": 8})
    result = run_stage("stages.download", work)
    assert one_error(result, "download") == (
        "data/raw/hotdog.zip: its files would unpack to 10.0 GiB, more than the 8.0 GiB that "
        "runtime.max_unpacked_gib allows (a zip bomb?); check data.url, or raise runtime.max_unpacked_gib "
        "in params.yaml")
    assert left_behind(work, *DOWNLOAD_OUTPUTS) == []  # the verified zip goes too: all or nothing
    assert not (work / "data" / "hotdog").exists()


def test_an_archive_declaring_more_than_the_free_space_is_refused(tmp_path: Path) -> None:
    # A limit no archive reaches, and a member claiming a pebibyte, which no test disk has free.
    sha1 = write_zip_declaring(tmp_path / "bomb.zip", GOOD, {"hotdog/test/hotdog/1.png": 1 << 50})
    work = project(tmp_path / "work", {"data.url": (tmp_path / "bomb.zip").as_uri(), "data.sha1": sha1,
                                       "runtime.max_unpacked_gib": 1.0e9})
    result = run_stage("stages.download", work)
    message = one_error(result, "download")
    assert re.fullmatch(r"data/raw/hotdog\.zip: its files would unpack to 1,048,576\.0 GiB, more than the "
                        r"[\d,.]+ [KMG]?i?B free on data; free some disk space, or check data\.url in "
                        r"params\.yaml", message), message
    assert left_behind(work, *DOWNLOAD_OUTPUTS) == []


# --- weights that are not ImageNet ResNet-18's ------------------------------------------


class RunsCode:
    """Unpickled without weights_only, this would create the folder `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def resnet18_state(**changes: torch.Tensor | None) -> dict:
    """A random torchvision resnet18() state dict with some keys replaced (None: removed)."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(weights=None).state_dict()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


# Each case: what the served file holds (bytes as they are, else torch.save'd), and the line;
# "[...]" stands for torch's own words, which go on.
BAD_WEIGHTS = {
    "a-list": (lambda: [torch.zeros(1)], "{url} holds a list, not a dict; check weights.url in params.yaml"),
    "not-all-tensors": (lambda: {"conv1.weight": torch.zeros(1), "fc.weight": "x"},
                        "{url}: the file is a dict, but not every value is a tensor; check weights.url in params.yaml"),
    "not-torch": (lambda: b"PK\x03\x04 not a torch file at all",
                  "{url} cannot be loaded (RuntimeError: PytorchStreamReader failed reading zip archive: "
                  "failed finding central directory[...]); check weights.url in params.yaml"),
    "runs-code": (None, "{url} cannot be loaded: it holds more than tensors and plain values, which "
                        "weights_only=True refuses; check weights.url in params.yaml"),
    "keys-and-shapes": (lambda: resnet18_state(layer4__1__bn2__weight=None, fc__bias=None,
                                               conv1__weight=torch.zeros(64, 1, 7, 7), head__weight=torch.zeros(2)),
                        "{url}: the file is not ImageNet ResNet-18 weights: 2 keys missing (layer4.1.bn2.weight, "
                        "fc.bias), 1 misshapen (conv1.weight: expected 64x3x7x7, got 64x1x7x7), 1 unexpected "
                        "(head.weight); check weights.url in params.yaml"),
    "two-classes": (lambda: resnet18_state(fc__weight=torch.zeros(2, 512), fc__bias=torch.zeros(2)),
                    "{url}: the file is not ImageNet ResNet-18 weights: 2 misshapen (fc.weight: expected 1000x512, "
                    "got 2x512; fc.bias: expected 1000, got 2); check weights.url in params.yaml"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS)
def test_weights_refuses_what_is_not_imagenet_resnet18(tmp_path: Path, case: str) -> None:
    make, expected = BAD_WEIGHTS[case]
    served = tmp_path / "www" / "weights.pth"
    served.parent.mkdir()
    marker = tmp_path / "code-ran"
    content = RunsCode(marker) if make is None else make()
    if isinstance(content, bytes):
        served.write_bytes(content)
    else:
        torch.save(content, served)
    sha256 = hashlib.sha256(served.read_bytes()).hexdigest()
    with serve_directory(served.parent) as url:
        work = project(tmp_path / "work", {"weights.url": f"{url}/weights.pth", "weights.sha256": sha256})
        result = run_stage("stages.weights", work)
    pattern = re.escape(expected.format(url=f"{url}/weights.pth")).replace(re.escape("[...]"), ".*")
    assert re.fullmatch(pattern, one_error(result, "weights"))
    assert left_behind(work, *WEIGHTS_OUTPUTS) == []
    if make is None:
        assert not marker.exists()  # the stage never ran the pickled call...
        torch.load(served, weights_only=False)  # ...which an unsafe load does (a harmless mkdir)
        assert marker.is_dir()


def test_weights_accepts_a_file_without_batchnorm_counters(tmp_path: Path) -> None:
    # torchvision's ImageNet files predate num_batches_tracked; load_state_dict fills it in.
    state = {k: v for k, v in resnet18_state().items() if not k.endswith("num_batches_tracked")}
    served = tmp_path / "www" / "weights.pth"
    served.parent.mkdir()
    torch.save(state, served)
    sha256 = hashlib.sha256(served.read_bytes()).hexdigest()
    work = project(tmp_path / "work", {"weights.url": served.as_uri(), "weights.sha256": sha256[:8]})
    result = run_stage("stages.weights", work)
    assert result.returncode == 0, result.stderr
    assert (work / WEIGHTS_OUTPUTS[0]).read_bytes() == served.read_bytes()
    assert f"resnet18.pth: sha256 {sha256} verified" in result.stdout.splitlines()


# --- params.yaml that is not YAML -----------------------------------------------------


@pytest.mark.parametrize("bad", ["  sha1: fba480ff: x", "\tsha1: fba480ff"], ids=["colon", "tab"])
def test_a_yaml_syntax_error_names_its_line(tmp_path: Path, bad: str) -> None:
    lines = (REPO / "params.yaml").read_text().splitlines()
    number = next(i for i, line in enumerate(lines, 1) if line.startswith("  sha1:"))  # data.sha1
    lines[number - 1] = bad
    (tmp_path / "params.yaml").write_text("\n".join(lines) + "\n")
    result = run_stage("stages.download", tmp_path)
    assert re.fullmatch(rf"params\.yaml: line {number} is not valid YAML \([^()]+\); fix the syntax",
                        one_error(result, "download"))
    assert left_behind(tmp_path, *DOWNLOAD_OUTPUTS) == []


# --- a disk that fills up ---------------------------------------------------------------


def cannot_write(path: str) -> str:
    return f"cannot write {path}: {TOO_LARGE} (disk full or over a file-size limit); free some space and re-run"


def test_download_stops_cleanly_when_the_zip_does_not_fit(tmp_path: Path) -> None:
    big = {**GOOD, "hotdog/train/hotdog/big.png": random.Random(0).randbytes(300_000)}  # incompressible
    sha1 = write_zip(tmp_path / "hotdog.zip", big)
    work = project(tmp_path / "work", {"data.url": (tmp_path / "hotdog.zip").as_uri(), "data.sha1": sha1})
    result = run_stage("stages.download", work, fsize=100_000)
    assert one_error(result, "download") == cannot_write("data/raw/hotdog.zip")
    assert left_behind(work, *DOWNLOAD_OUTPUTS) == []


def test_download_stops_cleanly_when_the_images_do_not_fit(tmp_path: Path) -> None:
    big = {**GOOD, "hotdog/train/hotdog/big.png": bytes(1 << 20)}  # 1 MiB of zeros, 1 KiB zipped
    path = tmp_path / "hotdog.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in big.items():
            zf.writestr(name, data)
    sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
    work = project(tmp_path / "work", {"data.url": path.as_uri(), "data.sha1": sha1})
    result = run_stage("stages.download", work, fsize=200_000)
    assert one_error(result, "download") == cannot_write("data/hotdog")
    assert left_behind(work, *DOWNLOAD_OUTPUTS) == []


@pytest.mark.parametrize("stage, limit, output", [
    ("manifest", 2_000, "data/manifest/train.parquet"),  # Parquet files here are ~3.5 KB
    ("decode", 20_000, "data/decoded/train.arrow"),  # Arrow files here are ~50-70 KB
])
def test_table_stages_stop_cleanly_when_the_disk_fills(tiny_project: Path, stage: str, limit: int,
                                                       output: str) -> None:
    if stage == "decode":
        from stages import manifest

        manifest.main()
    result = run_stage(f"stages.{stage}", tiny_project, fsize=limit)
    assert one_error(result, stage) == cannot_write(output)
    assert left_behind(tiny_project, output) == []


def test_training_stops_cleanly_when_the_checkpoint_does_not_fit(decoded_project: Path) -> None:
    # No resumable state either: the first large write is then the checkpoint (~45 MB).
    write_params(decoded_project / "params.yaml", {"runtime.resume": False})
    result = run_stage("stages.finetune", decoded_project, fsize=1 << 20)
    assert one_error(result, "finetune") == cannot_write("models/finetune.pt")
    assert left_behind(decoded_project, "models/finetune.pt", "metrics/finetune.json") == []


def test_torch_save_to_a_path_that_fails_is_one_line_too(tmp_path: Path) -> None:
    # save_checkpoint hands torch a Python file, so the OSError shows; a torch.save(obj, path)
    # inside atomic_path (hotdog.training.resume's) fails in C++ with no errno, which must read the same.
    code = ("import torch, sys\nfrom hotdog.core.errors import StageError\nfrom hotdog.core.files import atomic_path\n"
            "try:\n    with atomic_path('state.pt') as tmp:\n        torch.save({'w': torch.zeros(1 << 18)}, tmp)\n"
            "except StageError as err:\n    sys.exit(str(err))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=stage_env(), capture_output=True,
                            text=True, timeout=300, preexec_fn=lambda: resource.setrlimit(
                                resource.RLIMIT_FSIZE, (100_000, 100_000)))
    assert result.returncode == 1
    assert result.stderr == ("cannot write state.pt: the write failed (disk full or over a file-size limit); "
                             "free some space and re-run\n")
    assert left_behind(tmp_path, "state.pt") == []


def test_a_stop_in_the_middle_of_torch_save_is_a_stop_not_a_full_disk(tmp_path: Path) -> None:
    # SIGTERM (run_main raises it as Stopped) can land while torch.save writes a resumable
    # state. torch then reports a failed write as it unwinds, with the stop as its context;
    # that once read "disk full" in a CI log. The stop must come out, and nothing be left.
    import io

    from hotdog.core.errors import Stopped
    from hotdog.core.files import atomic_path

    class StopsOnThirdWrite(io.FileIO):
        writes = 0

        def write(self, b):
            StopsOnThirdWrite.writes += 1
            if StopsOnThirdWrite.writes == 3:
                raise Stopped(signal.SIGTERM)
            return super().write(b)

    with pytest.raises(Stopped) as stopped:
        with atomic_path(tmp_path / "state.pt") as tmp, StopsOnThirdWrite(tmp, "w") as f:
            torch.save({"w": torch.zeros(1 << 18)}, f)
    assert isinstance(stopped.value.__context__, RuntimeError)  # what torch.save raised over the stop
    assert left_behind(tmp_path, "state.pt") == []


# --- progress in a log ------------------------------------------------------------------


@pytest.fixture
def big_zip(tmp_path: Path) -> tuple[Path, str]:
    """A hotdog.zip of ~1 MiB (so each 64 KiB chunk is under a tenth) and its SHA-1."""
    files = {**GOOD, "hotdog/test/hotdog/big.png": random.Random(1).randbytes(1 << 20)}
    return tmp_path / "www" / "hotdog.zip", write_zip(tmp_path / "www" / "hotdog.zip", files)


def test_download_prints_progress_lines_in_a_log(tmp_path: Path, big_zip: tuple[Path, str]) -> None:
    path, sha1 = big_zip
    with serve_directory(path.parent) as url:
        work = project(tmp_path / "work", {"data.url": f"{url}/hotdog.zip", "data.sha1": sha1})
        result = run_stage("stages.download", work)
    assert result.returncode == 0 and result.stderr == "", result.stderr  # no bar in a log
    lines = result.stdout.splitlines()
    assert lines[0] == f"hotdog.zip: fetching 1.0 MiB from {url}/hotdog.zip"
    tenths = [re.fullmatch(r"hotdog\.zip: [\d.]+ [KM]iB of 1\.0 MiB \((\d+)%\)", line) for line in lines[1:11]]
    assert all(tenths), lines
    assert [int(m.group(1)) // 10 for m in tenths] == list(range(1, 11))  # one line per tenth
    assert lines[11:] == [f"hotdog.zip: sha1 {sha1} verified", f"extracted {len(GOOD) + 1} files of 2 classes (hotdog, not-hotdog) in hotdog/ into data/hotdog"]


def test_download_keeps_the_bar_on_a_terminal(tmp_path: Path, big_zip: tuple[Path, str]) -> None:
    path, sha1 = big_zip
    work = project(tmp_path / "work", {"data.url": path.as_uri(), "data.sha1": sha1})
    master, terminal = pty.openpty()  # stderr is a terminal, as under `dvc repro` in a shell
    # With a size, as a real one has: tqdm draws nothing on a 0-column terminal.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        proc = subprocess.Popen([sys.executable, "-m", "stages.download"], cwd=work, env=stage_env(),
                                stdout=subprocess.PIPE, stderr=terminal, text=True)
        os.close(terminal)
        shown = b""
        while True:  # read as it runs, so a full terminal buffer never blocks the stage
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        stdout, _ = proc.communicate(timeout=300)
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert b"hotdog.zip" in shown and b"%|" in shown  # tqdm's bar
    assert stdout.splitlines() == [f"hotdog.zip: sha1 {sha1} verified", f"extracted {len(GOOD) + 1} files of 2 classes (hotdog, not-hotdog) in hotdog/ into data/hotdog"]
