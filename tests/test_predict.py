"""Using the trained models (hotdog.serving.predict): the `hotdog predict` command on files, a folder,
a URL served from 127.0.0.1 and bad input, against the evaluate stage's own predictions for
the same images; models of 3 and 7 classes answering by their own names; and the demo page
(hotdog.serving.demo) in headless Chromium."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import socketserver
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.parquet as pq
import pytest
import torch
from conftest import ENV, REPO, copy_run, stop
from PIL import Image
from playwright.sync_api import sync_playwright
from servers import CHROMIUM, CHROMIUM_ARGS, free_port, serve_directory, serving
from torch import nn

from hotdog.core.errors import StageError
from hotdog.core.schema import SCORED
from hotdog.data.layout import IMAGE_SUFFIXES
from hotdog.model import export
from hotdog.model.checkpoint import save_checkpoint
from hotdog.model.inference import load_trained
from hotdog.model.resnet import build_model
from hotdog.serving import demo as demo_server
from hotdog.serving import predict, sources
from hotdog.serving.demo import MAX_UPLOAD

HOTDOG = Path(sys.executable).with_name("hotdog")  # the console script pyproject.toml installs
CORRUPT = "test/not-hotdog/1000.png"  # dataset_files' truncated PNG: the manifest rejects it


@pytest.fixture(scope="module")
def trained(pipeline_run, tmp_path_factory) -> Path:
    """A copy of conftest's synthetic end-to-end run (the real `dvc repro`): both checkpoints
    and the evaluate stage's predictions.parquet."""
    return copy_run(pipeline_run, tmp_path_factory.mktemp("trained") / "project")


def evaluated(project: Path) -> dict[tuple[str, str], dict]:
    """The evaluate stage's row per (model, path under data/hotdog)."""
    rows = pq.read_table(project / "metrics/predictions.parquet").to_pylist()
    return {(r["model"], r["path"]): r for r in rows}


def hotdog_predict(project: Path, *args: str) -> subprocess.CompletedProcess:
    """`hotdog predict ARGS` run in `project`, as a user runs it."""
    return subprocess.run([str(HOTDOG), "predict", *args], cwd=project, env=ENV, capture_output=True, text=True, timeout=300)


def test_predict_answers_as_the_evaluate_stage_does(trained, tmp_path):
    """Files, a folder, a URL, several models; good images get the evaluate stage's answers,
    bad ones one error line each, and the rest still get theirs."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(trained / "data/hotdog/test/hotdog/1.jpg", served / "lunch.jpg")
    (tmp_path / "notes.jpg").write_text("a text file, renamed\n")
    closed = f"http://127.0.0.1:{free_port()}/gone.jpg"  # nothing listens there
    with serve_directory(served) as base:
        run = hotdog_predict(trained, "data/hotdog/test/hotdog/0.png", "data/hotdog/test", f"{base}/lunch.jpg",
                     str(tmp_path / "notes.jpg"), "missing.png", closed, f"{base}/absent.jpg",
                     "--model", "finetune", "--model", "scratch", "--json", "--precision", "fp32",
                     "--batch-size", "3", "--out", str(tmp_path / "answers.parquet"))
    assert run.returncode == 1 and run.stdout, run.stderr  # some images failed
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    expected = evaluated(trained)
    by_input = {}
    for a in answers:
        by_input.setdefault(a["path"], {})[a["model"]] = a
    folder = {f"data/hotdog/{p.relative_to(trained / 'data/hotdog')}"
              for p in (trained / "data/hotdog/test").rglob("*") if p.is_file()}
    assert f"data/hotdog/{CORRUPT}" in folder and folder <= set(by_input)  # every file, the corrupt one too
    good = len(folder) - 1
    checked = 0
    for source, per_model in by_input.items():
        rel = source.removeprefix("data/hotdog/")
        if source.endswith("lunch.jpg"):
            rel = "test/hotdog/1.jpg"
        if ("finetune", rel) not in expected:
            continue  # a bad input, checked below
        for model in ("finetune", "scratch"):
            want, got = expected[(model, rel)], per_model[model]
            assert got["error"] is None
            assert got["class"] == want["predicted_class"], (source, model)
            assert list(got["probabilities"]) == ["hotdog", "not-hotdog"]  # the checkpoint's classes, in order
            assert list(got["probabilities"].values()) == pytest.approx(want["probabilities"], abs=1e-5)
            assert got["confidence"] == pytest.approx(want["confidence"], abs=1e-5), (source, model)
            assert got["top_k"] == [{"class": got["class"], "probability": got["confidence"]}]  # --top-k 1
            checked += 1
    assert checked == 2 * (good + 1)  # the folder's good images (the file is one of them), the URL

    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    corrupt = f"data/hotdog/{CORRUPT}"
    assert len(errors) == 5, run.stderr  # one per bad image, not one per model
    assert any(line.startswith(f"error: data/hotdog/{CORRUPT}: does not decode") for line in errors), errors
    assert corrupt in by_input and all(a["error"] and a["class"] is None and a["probabilities"] is None
                                       for a in by_input[corrupt].values())
    assert f"error: {tmp_path / 'notes.jpg'}: not an image PIL can read" in run.stderr
    assert "error: missing.png: no such file or folder" in run.stderr
    assert f"error: {closed}: cannot fetch it" in run.stderr
    assert f"error: {base}/absent.jpg: the server answered HTTP 404" in run.stderr
    assert "Traceback" not in run.stderr

    table = pq.read_table(tmp_path / "answers.parquet")
    assert table.schema.equals(SCORED)
    assert table.num_rows == len(answers) == 2 * (1 + len(folder) + 1 + 4)
    rows = table.to_pylist()
    assert sum(r["error"] is not None for r in rows) == 2 * 5
    assert all(r["classes"] == ["hotdog", "not-hotdog"] for r in rows)
    assert {r["class_name"] for r in rows} == {"hotdog", "not-hotdog", None}


def test_predict_prints_one_line_per_image(trained):
    run = hotdog_predict(trained, "data/hotdog/test/hotdog", "--precision", "fp32")
    assert run.returncode == 0, run.stderr
    lines = [line.split("\t") for line in run.stdout.splitlines()]
    expected = evaluated(trained)
    assert len(lines) == len(list((trained / "data/hotdog/test/hotdog").iterdir())) > 1
    for path, model, top in lines:
        want = expected[("finetune", path.removeprefix("data/hotdog/"))]
        name, prob = top.split(" ")
        assert (model, name, float(prob)) == ("finetune", want["predicted_class"],
                                              pytest.approx(want["confidence"], abs=5e-4))


def test_a_reader_that_goes_away_stops_the_lines_not_the_file(trained, tmp_path):
    # `hotdog predict photos/ --out answers.parquet 2>&1 | head -1`: the reader has gone
    # before the first line (closed here at once), from stdout and stderr alike. The file
    # still gets every answer, and the exit status still says an image could not be scored;
    # it was 0, with no file and no word.
    folder = trained / "data/hotdog/test/hotdog"
    (tmp_path / "notes.jpg").write_text("a text file, renamed\n")
    out = tmp_path / "answers.parquet"
    run = subprocess.Popen([str(HOTDOG), "predict", str(folder), str(tmp_path / "notes.jpg"), "--out", str(out),
                            "--precision", "fp32"], cwd=trained, env={**ENV, "PYTHONUNBUFFERED": ""},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run.stdout.close()
    assert run.wait(timeout=300) == 1
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(list(folder.iterdir())) + 1


def test_predict_in_an_untrained_checkout(trained, tmp_path):
    """No models/: one line saying how to get one, and nothing else."""
    shutil.copy(trained / "params.yaml", tmp_path / "params.yaml")
    run = hotdog_predict(tmp_path, str(trained / "data/hotdog/test/hotdog/0.png"))
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.strip().splitlines() == [
        "error: predict: no model at models/finetune.pt; train it with `make run` (or `dvc repro finetune`), "
        "or fetch it with `dvc pull`"]


def test_batches_hold_many_images_and_change_no_answer(trained, monkeypatch):
    """A folder goes through the model `batch_size` images at a time, and the batch size
    changes no answer."""
    monkeypatch.chdir(trained)
    device, precision = predict.pick_runtime("cpu", "fp32")
    model = predict.load_model("finetune", device)
    batches = []
    forward = predict.forward
    monkeypatch.setattr(predict, "forward", lambda m, views, *a: batches.append(len(views)) or forward(m, views, *a))
    items = list(sources.expand(["data/hotdog/test"]))
    by_four = list(predict.score([model], items, device, precision, batch_size=4))
    # Four files a batch; the corrupt one leaves its batch a view short.
    assert batches == [len([f for f in items[i:i + 4] if not f.endswith("1000.png")])
                       for i in range(0, len(items), 4)]
    assert len(batches) > 2 and max(batches) == 4
    one_by_one = list(predict.score([model], items, device, precision, batch_size=1))
    assert [a.predicted for a in by_four] == [a.predicted for a in one_by_one]
    assert torch.allclose(torch.tensor([a.probabilities or (0.0, 0.0) for a in by_four]),
                          torch.tensor([a.probabilities or (0.0, 0.0) for a in one_by_one]), atol=1e-6)


def test_a_folder_is_searched_as_the_pipeline_reads_one(tmp_path):
    # Every image at any depth, sorted; not a photo tool's thumbnails, nor other files.
    for name in ("b.jpg", "a/2019/c.PNG", "a/d.txt", "@eaDir/b.jpg/thumb.jpg", "a/.thumbnails/c.png", "._b.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert list(sources.expand([str(tmp_path)])) == [str(tmp_path / "a/2019/c.PNG"), str(tmp_path / "b.jpg")]


def test_the_docs_name_every_suffix_a_folder_is_searched_for():
    text = (REPO / "docs/predict.md").read_text()
    missing = [suffix for suffix in IMAGE_SUFFIXES if f"`{suffix}`" not in text]
    assert not missing, f"docs/predict.md does not name {missing}, which a folder is searched for (IMAGE_SUFFIXES)"


# ------------------------------------------------------------------ any number of classes

THREE = ("cat", "dog", "emu")
SEVEN = ("ant", "bee", "cow", "doe", "eel", "fox", "gnu")
# The logits each model gives every photo: its fc weights are zero, so the bias is the
# answer whatever the photo. In neither is the most probable class the first one.
LOGITS = {THREE: [0.0, 2.0, 1.0], SEVEN: [0.5, -1.0, 3.0, 0.0, 2.0, 1.0, -2.0]}
THREE_LINE = "dog 0.665, emu 0.245, cat 0.090"  # softmax of LOGITS[THREE], most probable first
SEVEN_TOP = ["cow", "eel", "fox", "ant", "doe", "bee", "gnu"]
# A folder name is any text: the demo page must show it, never run it.
MARKUP = ("cat", "<b>dog</b>", "<img src=x onerror=\"document.title='ran'\">")
CPU = ["--device", "cpu", "--precision", "fp32"]


def write_checkpoint(dest: Path, classes: tuple[str, ...], logits: list[float]) -> Path:
    """A checkpoint as the training stages save one, for `classes`, answering `logits`."""
    torch.manual_seed(0)
    model = build_model(None, "default", classes)
    nn.init.zeros_(model.fc.weight)
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor(logits))
    save_checkpoint(dest, model.state_dict(), "finetune", {"seed": 0, "train": {"image_size": 32}}, {}, classes)
    return dest


def write_photos(folder: Path) -> Path:
    """Two small photos and a text file named like one, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate([(200, 40, 40), (30, 120, 220)]):
        Image.new("RGB", (48, 36), colour).save(folder / f"{i}.png")
    (folder / "notes.jpg").write_text("not a photo\n")
    return folder


@pytest.fixture(scope="module")
def n_classes(tmp_path_factory) -> Path:
    """A folder with three.pt (3 classes), seven.pt (7 classes), markup.pt (3 classes, one
    named in HTML) and photos/."""
    root = tmp_path_factory.mktemp("n-classes")
    write_checkpoint(root / "three.pt", THREE, LOGITS[THREE])
    write_checkpoint(root / "seven.pt", SEVEN, LOGITS[SEVEN])
    write_checkpoint(root / "markup.pt", MARKUP, LOGITS[THREE])
    write_photos(root / "photos")
    return root


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """`hotdog predict ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        predict.main(list(args))
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def refusal(capsys, *args: str) -> str:
    """The one line `hotdog predict ARGS` stops with before scoring anything (its exit message)."""
    with pytest.raises(SystemExit) as done:
        predict.main(list(args))
    assert capsys.readouterr() == ("", "")
    return done.value.code


def test_each_model_answers_with_its_own_class_names(n_classes, capsys):
    """Two models with 3 and 7 classes: one line per image and model, the top K by name,
    most probable first."""
    photo, three, seven = (str(n_classes / name) for name in ("photos/0.png", "three.pt", "seven.pt"))
    code, out, err = run_main(capsys, photo, "--model", three, "--model", seven, "--top-k", "3", *CPU)
    assert code == 0, err
    assert out.splitlines() == [f"{photo}\t{three}\t{THREE_LINE}",
                                f"{photo}\t{seven}\tcow 0.602, eel 0.222, fox 0.082"]
    code, out, _ = run_main(capsys, photo, "--model", seven, *CPU)  # --top-k 1 by default
    assert code == 0 and out.splitlines() == [f"{photo}\t{seven}\tcow 0.602"]


def test_json_names_every_class_and_the_top_k(n_classes, capsys):
    photos, three, seven = (str(n_classes / name) for name in ("photos", "three.pt", "seven.pt"))
    code, out, err = run_main(capsys, photos, "--model", three, "--model", seven, "--top-k", "5", "--json", *CPU)
    assert code == 1 and err.startswith(f"error: {n_classes / 'photos/notes.jpg'}: not an image")
    answers = [json.loads(line) for line in out.splitlines()]
    assert [(Path(a["path"]).name, a["model"]) for a in answers] == [
        (name, model) for name in ("0.png", "1.png", "notes.jpg") for model in (three, seven)]
    for a in answers:
        classes = THREE if a["model"] == three else SEVEN
        if a["path"].endswith("notes.jpg"):
            assert a["error"] and a["class"] is a["confidence"] is a["top_k"] is a["probabilities"] is None
            continue
        assert a["error"] is None
        assert tuple(a["probabilities"]) == classes  # every class, in label order
        assert sum(a["probabilities"].values()) == pytest.approx(1, abs=1e-6)
        assert list(a["probabilities"].values()) == pytest.approx(torch.tensor(LOGITS[classes]).softmax(0).tolist())
        top = [t["class"] for t in a["top_k"]]
        assert top == (["dog", "emu", "cat"] if classes == THREE else SEVEN_TOP[:5])  # all 3, or the top 5
        assert [t["probability"] for t in a["top_k"]] == [a["probabilities"][name] for name in top]
        assert (a["class"], a["confidence"]) == (top[0], a["top_k"][0]["probability"])


def test_the_parquet_file_holds_each_models_classes_and_probabilities(n_classes, capsys, tmp_path):
    photos, three, seven = (str(n_classes / name) for name in ("photos", "three.pt", "seven.pt"))
    out = tmp_path / "answers.parquet"
    code, _, err = run_main(capsys, photos, "--model", seven, "--model", three, "--out", str(out), *CPU)
    assert code == 1 and f"wrote 6 answers to {out}" in err
    table = pq.read_table(out)
    assert table.schema.equals(SCORED)
    rows = table.to_pylist()
    assert [(r["model"], Path(r["path"]).name) for r in rows] == [  # sorted by model, then path
        (model, name) for model in sorted([three, seven]) for name in ("0.png", "1.png", "notes.jpg")]
    for r in rows:
        classes = THREE if r["model"] == three else SEVEN
        assert tuple(r["classes"]) == classes
        if r["path"].endswith("notes.jpg"):
            assert r["error"].startswith("not an image")
            assert r["predicted"] is r["class_name"] is r["confidence"] is r["probabilities"] is None
            continue
        assert r["class_name"] == classes[r["predicted"]] == ("dog" if classes == THREE else "cow")
        assert sum(r["probabilities"]) == pytest.approx(1, abs=1e-6)
        assert r["confidence"] == max(r["probabilities"]) == r["probabilities"][r["predicted"]]


def test_top_k_must_be_positive(n_classes, capsys):
    code, out, err = run_main(capsys, str(n_classes / "photos"), "--model", str(n_classes / "three.pt"),
                              "--top-k", "0")
    assert code == 2 and out == "" and "--top-k must be at least 1" in err


def test_the_torchscript_export_answers_as_its_checkpoint(n_classes, capsys, tmp_path):
    """The export stage's .torchscript.pt is a model: torch.jit runs it, with the classes and
    input size its hotdog.json holds, and no torch warning is printed."""
    photo, three = str(n_classes / "photos/0.png"), str(n_classes / "three.pt")
    trained = load_trained(Path(three), "")
    scripted = tmp_path / "three.torchscript.pt"
    export.to_torchscript(trained.module.eval(), 32, export.metadata("finetune", THREE, 32, trained.params, "f" * 40),
                          scripted)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_main(capsys, photo, "--model", three, "--model", str(scripted), "--top-k", "3", *CPU)
    assert code == 0 and err == "" and not [str(w.message) for w in caught]
    assert out.splitlines() == [f"{photo}\t{three}\t{THREE_LINE}", f"{photo}\t{scripted}\t{THREE_LINE}"]


def test_a_torchscript_file_without_hotdogs_metadata_is_one_line(tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notes
        torch.jit.save(torch.jit.trace(nn.Linear(2, 2), torch.zeros(1, 2)), str(foreign))
    assert refusal(capsys, str(tmp_path), "--model", str(foreign), *CPU) == (
        f"error: predict: {foreign} is not a TorchScript model with hotdog's metadata (ValueError: it holds no "
        "hotdog.json); pass a file the export stage wrote (models/<run>.torchscript.pt)")


def test_a_file_that_is_no_model_is_said_to_be_none(tmp_path, capsys):
    """Text, random bytes, an empty file or a zip of something else: not a checkpoint, which
    weights_only=True's refusal would not say."""
    files = {"README.md": b"# notes\n", "noise.pt": bytes(range(255, -1, -1)) * 4, "empty.pt": b""}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "photos.zip", "w") as zf:
        zf.writestr("photos/0.txt", "not a model")
    for name in (*files, "photos.zip"):
        assert refusal(capsys, str(tmp_path), "--model", str(tmp_path / name), *CPU) == (
            f"error: predict: {tmp_path / name} is not a model (neither a torch checkpoint nor an ONNX or "
            "TorchScript file); pass models/<run>.pt, models/<run>.onnx or models/<run>.torchscript.pt, or "
            "--model finetune or scratch"), name


def test_top_orders_by_probability_then_label():
    answer = predict.Answer("a.jpg", "m", ("x", "y", "z", "w"), 1, (0.1, 0.4, 0.1, 0.4))
    assert answer.top(3) == [("y", 0.4), ("w", 0.4), ("x", 0.1)]
    assert [name for name, _ in answer.top(10)] == ["y", "w", "x", "z"]
    assert (answer.class_name, answer.confidence) == ("y", 0.4)
    assert predict.Answer("b.jpg", "m", ("x", "y"), None, None, "unreadable").top(2) == []


def test_summary_counts_every_image_and_ranks_by_confidence():
    probabilities = [(0.1, 0.85, 0.05), (0.2, 0.3, 0.5), (0.4, 0.35, 0.25), (0.01, 0.98, 0.01), (0.3, 0.36, 0.34)]
    answers = [predict.Answer(f"{i}.jpg", "three", THREE, max(range(3), key=p.__getitem__), p)
               for i, p in enumerate(probabilities)]
    answers.append(predict.Answer("bad.jpg", "three", THREE, None, None, "not an image"))
    answers.append(predict.Answer("0.jpg", "seven", SEVEN, 6, (0.0,) * 6 + (1.0,)))
    counts, extremes = predict.summary(answers, extremes=2)
    assert counts == [{"model": "seven", "class": "gnu", "images": 1},
                      {"model": "three", "class": "cat", "images": 1},
                      {"model": "three", "class": "dog", "images": 3},
                      {"model": "three", "class": "emu", "images": 1},
                      {"model": "three", "class": "error", "images": 1}]
    assert [(r["model"], r["confidence"], r["image"], r["class"], r["probability"]) for r in extremes] == [
        ("three", "most", "3.jpg", "dog", 0.98), ("three", "most", "0.jpg", "dog", 0.85),
        ("three", "least", "4.jpg", "dog", 0.36), ("three", "least", "2.jpg", "cat", 0.4),
        ("seven", "most", "0.jpg", "gnu", 1.0), ("seven", "least", "0.jpg", "gnu", 1.0)]

# ------------------------------------------------------------------ one bad input among good ones

# Each fails before a byte is sent: a port that is no number, a bracket left open, an empty label.
INVALID_URLS = ("http://localhost:abc/x.jpg", "http://[::1/x.jpg", "http://a..b/x.jpg")


def json_answers(out: str) -> dict[str, dict]:
    """`--json` lines of one model, by path."""
    return {a["path"]: a for a in map(json.loads, out.splitlines())}


def test_an_invalid_url_is_its_own_error_and_the_others_still_get_answers(n_classes, capsys):
    photo, three = str(n_classes / "photos/0.png"), str(n_classes / "three.pt")
    code, out, err = run_main(capsys, *INVALID_URLS, photo, "--model", three, "--json", *CPU)
    assert code == 1
    errors = err.splitlines()
    assert len(errors) == len(INVALID_URLS), err
    for url, line in zip(INVALID_URLS, errors):
        assert line.startswith(f"error: {url}: not a valid URL (") and line.endswith("); check it"), line
    answers = json_answers(out)
    assert answers[photo]["class"] == "dog" and answers[photo]["error"] is None
    assert all(answers[url]["error"] and answers[url]["class"] is None for url in INVALID_URLS)


class _Broken(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        asked = self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b""):  # the request's head, so it is not reset mid-send
            pass
        if asked.startswith(b"GET /cut"):  # a chunk of 1 KiB announced, 10 bytes sent, then the end
            self.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + b"\0" * 10)
        else:
            self.wfile.write(b"garbage\r\n\r\n")


@contextmanager
def serve_broken() -> Iterator[str]:
    """A server on 127.0.0.1 that answers /cut... with a body cut short, and anything else with a
    line that is not HTTP: its base URL."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Broken)
    server.daemon_threads = True
    with serving(server) as url:
        yield url


def test_a_server_that_does_not_speak_http_or_stops_short_is_that_urls_error(n_classes, capsys):
    photos, three = n_classes / "photos", str(n_classes / "three.pt")
    with serve_broken() as broken, serve_directory(photos) as base:
        code, out, err = run_main(capsys, f"{broken}/x.jpg", f"{base}/0.png", f"{broken}/cut.jpg",
                                  str(photos / "1.png"), "--model", three, "--json", *CPU)
    assert code == 1
    assert err.splitlines() == [
        f"error: {broken}/x.jpg: the server's answer is not HTTP (BadStatusLine: 'garbage\\r\\n'); "
        "check the URL and its port",
        f"error: {broken}/cut.jpg: the server stopped in the middle of the image; try again, or check the URL"]
    answers = json_answers(out)
    assert [answers[p]["class"] for p in (f"{base}/0.png", str(photos / "1.png"))] == ["dog", "dog"]
    assert answers[f"{broken}/x.jpg"]["class"] is answers[f"{broken}/cut.jpg"]["class"] is None


def test_an_unexpected_error_reading_one_image_is_that_images_error(n_classes, capsys, monkeypatch):
    """Whatever goes wrong reading one image (here a stand-in for a bug) costs that image its
    answer, not the run's."""
    photos, three = n_classes / "photos", str(n_classes / "three.pt")
    read_file = predict.read_file

    def broken(path: Path, *args) -> bytes:
        if path.name == "0.png":
            raise KeyError("a bug")
        return read_file(path, *args)

    monkeypatch.setattr(predict, "read_file", broken)
    code, out, err = run_main(capsys, str(photos / "0.png"), str(photos / "1.png"), "--model", three, "--json", *CPU)
    assert code == 1
    assert err.splitlines() == [f"error: {photos / '0.png'}: could not be read (KeyError: 'a bug'); check it, "
                                f"and report this error if the image is fine"]
    answers = json_answers(out)
    assert (answers[str(photos / "0.png")]["class"], answers[str(photos / "1.png")]["class"]) == (None, "dog")


def png(width: int, height: int) -> bytes:
    """A black PNG of that size, as bytes."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_long_thin_image_is_refused_before_its_pixels_are_decoded(monkeypatch):
    # 1 x 50,000 px in a few hundred bytes would be 256 x 12,800,000 RGB after the resize: 9.8 GB.
    decode = predict.rgb_pixels
    monkeypatch.setattr(predict, "rgb_pixels", lambda *args: pytest.fail("decoded"))
    for (width, height), ratio in [((1, 1000), "1,000.0"), ((1000, 1), "1,000.0"), ((1, 50_000), "50,000.0"),
                                   ((10, 501), "50.1")]:  # the same check and words as the manifest's
        data = png(width, height)
        assert len(data) < 1000
        with pytest.raises(sources.ImageError) as caught:
            predict.test_view(data, 224)
        assert str(caught.value) == (f"{width} x {height} px: its longer side is {ratio} times its shorter, more "
                                     "than the 50 an image may have; crop it to the part to classify")
    monkeypatch.setattr(predict, "rgb_pixels", decode)
    assert predict.test_view(png(10, 500), 224).shape == (3, 224, 224)  # 50 to 1 is taken

# ------------------------------------------------------------------ the demo page


def start_demo(cwd: Path, log: Path, *args: str):
    """`hotdog demo ARGS` on a free loopback port in `cwd`, once it answers: (process, base URL)."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen([str(HOTDOG), "demo", "--port", str(port), "--precision", "fp32", *args],
                                   cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, f"hotdog demo exited:\n{log.read_text()}"
            try:
                urllib.request.urlopen(url + "api/health", timeout=2).close()
                return process, url
            except OSError:
                assert time.monotonic() < deadline, f"hotdog demo did not answer:\n{log.read_text()}"
                time.sleep(0.5)
    except BaseException:
        stop(process, seconds=10)
        raise


@pytest.fixture(scope="module")
def demo(trained, tmp_path_factory):
    """`hotdog demo` in the trained project (finetune and scratch): its base URL."""
    process, url = start_demo(trained, tmp_path_factory.mktemp("demo") / "demo.log")
    try:
        yield url
    finally:
        stop(process, seconds=10)


def bars(card) -> list[tuple[str, str]]:
    """A model's card's bars, top to bottom: (class name as shown, percentage as shown)."""
    rows = card.locator(".top li")
    return [(rows.nth(i).locator(".name").inner_text(), rows.nth(i).locator(".pct").inner_text())
            for i in range(rows.count())]


def test_demo_page_shows_both_models_bars_and_a_clear_error(trained, demo, tmp_path):
    photo = trained / "data/hotdog/test/not-hotdog/2.png"
    text = tmp_path / "lunch.jpg"
    text.write_text("not a photo at all\n")
    expected = evaluated(trained)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(demo)
            page.set_input_files("#file", str(photo))
            page.wait_for_selector(".answer[data-model=scratch]", timeout=60_000)
            for model in ("finetune", "scratch"):
                card = page.locator(f".answer[data-model={model}]")
                want = expected[(model, "test/not-hotdog/2.png")]
                assert card.locator(".verdict").inner_text() == want["predicted_class"]
                # Two classes: both bars, the predicted one first, each with its percentage.
                shown = sorted(zip(("hotdog", "not-hotdog"), want["probabilities"]), key=lambda t: -t[1])
                assert bars(card) == [(name, f"{100 * p:.1f}%") for name, p in shown]
                assert shown[0][0] == want["predicted_class"]
                width = card.locator(f".top li[data-class={want['predicted_class']}] .bar div").evaluate(
                    "e => e.style.width")
                assert width == f"{100 * want['confidence']:.1f}%"
            assert page.locator("#photo").is_visible()
            assert page.locator("#error").inner_text() == ""

            page.set_input_files("#file", str(text))
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=60_000)
            assert page.locator("#error").inner_text() == (
                "lunch.jpg: not an image PIL can read; pass a JPEG, PNG, GIF, BMP, TIFF or WebP photo")
            assert page.locator(".answer").count() == 0
        finally:
            browser.close()


def test_demo_page_shows_the_top_five_of_many_classes_by_name(n_classes, tmp_path):
    """Seven classes: five bars, most probable first. Three: all three, a class named in
    HTML shown as its text."""
    process, url = start_demo(n_classes, tmp_path / "demo.log", "--model", "seven.pt", "--model", "markup.pt")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(url)
                assert "seven.pt (7 classes), markup.pt (3 classes)" in page.locator(".sub").inner_text()
                page.set_input_files("#file", str(n_classes / "photos/1.png"))
                page.wait_for_selector('.answer[data-model="markup.pt"]', timeout=60_000)
                seven = page.locator('.answer[data-model="seven.pt"]')
                assert seven.locator(".verdict").inner_text() == "cow"
                assert bars(seven) == [("cow", "60.2%"), ("eel", "22.2%"), ("fox", "8.2%"), ("ant", "4.9%"),
                                       ("doe", "3.0%")]
                markup = page.locator('.answer[data-model="markup.pt"]')
                assert markup.locator(".verdict").inner_text() == MARKUP[1]
                assert bars(markup) == [(MARKUP[1], "66.5%"), (MARKUP[2], "24.5%"), ("cat", "9.0%")]
                assert markup.locator("b, img").count() == 0 and page.title() != "ran"
            finally:
                browser.close()
    finally:
        stop(process, seconds=10)


def test_demo_refuses_an_oversized_upload(demo):
    request = urllib.request.Request(demo + "api/predict", data=b"\0" * (MAX_UPLOAD + 1), method="POST",
                                     headers={"X-Filename": "huge.jpg"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413
    assert json.loads(caught.value.read())["error"].startswith("huge.jpg is larger than the 10.0 MiB limit")


def post_chunked(url: str, chunks: list[bytes], name: str) -> tuple[int, bytes]:
    """POST `chunks` to the demo's endpoint with Transfer-Encoding: chunked, no Content-Length,
    the last chunk and the body's end in one write: (status, body)."""
    where = urlparse(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    try:
        connection.putrequest("POST", "/api/predict")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.putheader("X-Filename", name)
        connection.endheaders()
        for i, chunk in enumerate(chunks):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) + (b"0\r\n\r\n" if i == len(chunks) - 1 else b""))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_demo_refuses_an_oversized_chunked_upload(demo):
    """No Content-Length: the limit is found while reading, in the middle of the body or in its
    last chunk, when the server has already read the end of it."""
    mib = b"\0" * (1 << 20)
    middle = [mib] * (MAX_UPLOAD // len(mib) + 2)  # past the limit a chunk before the end
    last = [mib] * (MAX_UPLOAD // len(mib)) + [b"\0"]  # the limit to the byte, then one more
    assert sum(map(len, last[:-1])) == MAX_UPLOAD
    for chunks in (middle, last):
        status, body = post_chunked(demo, chunks, "huge.jpg")
        assert status == 413, body
        assert json.loads(body)["error"].startswith("huge.jpg is larger than the 10.0 MiB limit")


def test_the_demo_refuses_a_port_out_of_range_and_a_host_that_does_not_resolve():
    for port in (0, 70000, -1):
        with pytest.raises(StageError) as caught:
            demo_server.check_port("127.0.0.1", port)
        assert str(caught.value) == f"--port {port} is not a TCP port; pass one from 1 to 65535"
    with pytest.raises(StageError) as caught:
        demo_server.check_port("no-such-host.invalid", demo_server.DEFAULT_PORT)  # .invalid never resolves
    assert str(caught.value).startswith("cannot listen on no-such-host.invalid (")
    assert str(caught.value).endswith("); pass another --host")
    with pytest.raises(StageError) as caught:  # TEST-NET-1, for documentation: no machine's address
        demo_server.check_port("192.0.2.1", demo_server.DEFAULT_PORT)
    assert str(caught.value).endswith("); pass another --host, an address of this machine")
