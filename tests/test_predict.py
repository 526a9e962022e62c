"""Using the trained models (hotdog.serving.predict): the `hotdog predict` command on files, a folder,
a URL served from 127.0.0.1 and bad input, against the evaluate stage's own predictions for
the same images; and the demo page (hotdog.serving.demo) in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from conftest import ENV, copy_run, stop
from playwright.sync_api import sync_playwright
from servers import CHROMIUM, CHROMIUM_ARGS, free_port, serve_directory

from hotdog.core.names import CLASSES
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
            assert got["class"] == CLASSES[want["predicted"]], (source, model)
            assert got["prob_hotdog"] == pytest.approx(want["prob_hotdog"], abs=1e-5), (source, model)
            checked += 1
    assert checked == 2 * (good + 1)  # the folder's good images (the file is one of them), the URL

    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    corrupt = f"data/hotdog/{CORRUPT}"
    assert len(errors) == 5, run.stderr  # one per bad image, not one per model
    assert any(line.startswith(f"error: data/hotdog/{CORRUPT}: does not decode") for line in errors), errors
    assert corrupt in by_input and all(a["error"] and a["class"] is None for a in by_input[corrupt].values())
    assert f"error: {tmp_path / 'notes.jpg'}: not an image PIL can read" in run.stderr
    assert "error: missing.png: no such file or folder" in run.stderr
    assert f"error: {closed}: cannot fetch it" in run.stderr
    assert f"error: {base}/absent.jpg: the server answered HTTP 404" in run.stderr
    assert "Traceback" not in run.stderr

    table = pq.read_table(tmp_path / "answers.parquet")
    assert table.num_rows == len(answers) == 2 * (1 + len(folder) + 1 + 4)
    rows = table.to_pylist()
    assert sum(r["error"] is not None for r in rows) == 2 * 5
    assert {r["class_name"] for r in rows} <= {*CLASSES, None}


def test_predict_prints_one_line_per_image(trained):
    run = hotdog_predict(trained, "data/hotdog/test/hotdog", "--precision", "fp32")
    assert run.returncode == 0, run.stderr
    lines = [line.split("\t") for line in run.stdout.splitlines()]
    expected = evaluated(trained)
    assert len(lines) == len(list((trained / "data/hotdog/test/hotdog").iterdir())) > 1
    for path, name, prob in lines:
        want = expected[("finetune", path.removeprefix("data/hotdog/"))]
        assert (name, float(prob)) == (CLASSES[want["predicted"]], pytest.approx(want["prob_hotdog"], abs=1e-4))


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
    assert torch.allclose(torch.tensor([a.prob_hotdog or 0.0 for a in by_four]),
                          torch.tensor([a.prob_hotdog or 0.0 for a in one_by_one]), atol=1e-6)


def test_summary_counts_every_image_and_ranks_by_confidence():
    answers = [predict.Answer(f"{i}.jpg", "finetune", 0 if p >= 0.5 else 1, p)
               for i, p in enumerate([0.9, 0.2, 0.55, 0.99, 0.45])]
    answers.append(predict.Answer("bad.jpg", "finetune", None, None, "not an image"))
    counts, extremes = predict.summary(answers, extremes=2)
    assert counts == [{"model": "finetune", "class": "error", "images": 1},
                      {"model": "finetune", "class": "hotdog", "images": 3},
                      {"model": "finetune", "class": "not-hotdog", "images": 2}]
    assert [(r["confidence"], r["image"]) for r in extremes] == [
        ("most", "3.jpg"), ("most", "0.jpg"), ("least", "4.jpg"), ("least", "2.jpg")]


# ------------------------------------------------------------------ the demo page


@pytest.fixture(scope="module")
def demo(trained, tmp_path_factory):
    """`hotdog demo` on a free loopback port in the trained project: its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("demo") / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen([str(HOTDOG), "demo", "--port", str(port), "--precision", "fp32"],
                                   cwd=trained, env=ENV, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, f"hotdog demo exited:\n{log.read_text()}"
            try:
                urllib.request.urlopen(url + "api/health", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"hotdog demo did not answer:\n{log.read_text()}"
                time.sleep(0.5)
        yield url
    finally:
        stop(process, seconds=10)


def test_demo_page_shows_both_verdicts_and_a_clear_error(trained, demo, tmp_path):
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
                verdict = "Hotdog" if want["predicted"] == 0 else "Not hotdog"
                assert card.locator(".verdict").inner_text() == verdict
                assert card.locator(".prob").inner_text() == f"P(hotdog) = {want['prob_hotdog']:.3f}"
            assert page.locator("#photo").is_visible()
            assert page.locator("#error").inner_text() == ""

            page.set_input_files("#file", str(text))
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=60_000)
            assert page.locator("#error").inner_text() == (
                "lunch.jpg: not an image PIL can read; pass a JPEG, PNG, GIF, BMP, TIFF or WebP photo")
            assert page.locator(".answer").count() == 0
        finally:
            browser.close()


def test_demo_refuses_an_oversized_upload(demo):
    request = urllib.request.Request(demo + "api/predict", data=b"\0" * (MAX_UPLOAD + 1), method="POST",
                                     headers={"X-Filename": "huge.jpg"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 413
    assert json.loads(caught.value.read())["error"].startswith("huge.jpg is larger than the 10.0 MiB limit")
