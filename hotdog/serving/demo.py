"""`hotdog demo` (make demo): a local page where you drop or choose a photo and see the
fine-tuned model's most probable classes as bars, by name, with the scratch model's beside
it. One HTML page and one JSON endpoint (POST /api/predict, the photo as the request body);
the models are loaded once, at start-up, and every photo goes through hotdog.serving.predict
as `hotdog predict` sends it.
"""

from __future__ import annotations

import argparse
import errno
import html
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from urllib.parse import unquote

import torch
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from hotdog.core.errors import StageError
from hotdog.core.files import size_text
from hotdog.serving import predict, sources

MAX_UPLOAD = 10 << 20  # bytes; a phone photo is 2 to 6 MiB
DRAIN = 4 * MAX_UPLOAD  # bytes of an oversized upload read and dropped, so its sender gets the answer
DEFAULT_PORT = 8000
TOP = 5  # classes shown per model: the five most probable, or all of them when there are no more


def create_app(models: list[predict.Model], device: torch.device, precision: str) -> FastAPI:
    """The page and its endpoint, for models already loaded on `device`."""
    app = FastAPI(title="hotdog demo", docs_url=None, redoc_url=None)
    one_at_a_time = threading.Lock()  # two photos at once would only share the same cores
    described = ", ".join(f"{m.name} ({len(m.classes)} classes)" for m in models)
    page = PAGE.replace("{{MODELS}}", html.escape(described)).replace(
        "{{LIMIT}}", str(MAX_UPLOAD)).replace("{{LIMIT_TEXT}}", size_text(MAX_UPLOAD)).replace(
        "{{DEVICE}}", html.escape(f"{device.type}, {precision}"))

    async def too_large(what: str, chunks: AsyncIterator[bytes]) -> JSONResponse:
        # Read the rest (up to a bound) before answering: a client still sending when the
        # connection closes sees a reset, not the message. The same iterator the upload was
        # read from: Starlette refuses a second request.stream() once the body has ended.
        drained = 0
        async for chunk in chunks:
            drained += len(chunk)
            if drained > DRAIN:
                break
        return JSONResponse({"error": f"{what} is larger than the {size_text(MAX_UPLOAD)} limit; "
                                      f"choose a smaller photo, or shrink it first"}, status_code=413)

    def classify(name: str, data: bytes) -> list[predict.Answer]:
        with one_at_a_time:
            return predict.score_bytes(models, name, data, device, precision)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/api/health")
    def health() -> dict:
        return {"models": [m.name for m in models], "classes": {m.name: list(m.classes) for m in models},
                "device": device.type, "precision": precision}

    @app.post("/api/predict")
    async def predict_photo(request: Request) -> JSONResponse:
        name = unquote(request.headers.get("x-filename", "")) or "the upload"
        declared = request.headers.get("content-length")
        chunks = request.stream()
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD:
            return await too_large(name, chunks)
        data = bytearray()
        async for chunk in chunks:  # counted as it comes: Content-Length may be absent or wrong
            data += chunk
            if len(data) > MAX_UPLOAD:
                return await too_large(name, chunks)
        if not data:
            return JSONResponse({"error": "no photo was sent; choose one first"}, status_code=400)
        start = time.perf_counter()
        try:
            answers = await run_in_threadpool(classify, name, bytes(data))
        except sources.ImageError as err:
            return JSONResponse({"error": f"{name}: {err}"}, status_code=400)
        return JSONResponse({
            "image": name,
            "answers": [{k: v for k, v in a.as_json(TOP).items() if k not in ("path", "error")} for a in answers],
            "ms": round(1000 * (time.perf_counter() - start), 1),
        })

    return app


def check_port(host: str, port: int) -> None:
    """A one-line error now, rather than uvicorn's log lines later, when the port is taken, is
    no port, or the host is not one of this machine's addresses."""
    if not 1 <= port <= 65535:  # bind() would raise OverflowError, or take any free port for 0
        raise StageError(f"--port {port} is not a TCP port; pass one from 1 to 65535")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a closed server's port is free
        try:
            s.bind((host, port))
        except socket.gaierror as err:  # the name does not resolve: no port would help
            raise StageError(f"cannot listen on {host} ({err.strerror}); pass another --host") from None
        except OSError as err:
            fix = "--host, an address of this machine" if err.errno == errno.EADDRNOTAVAIL else "--port"
            raise StageError(f"cannot listen on {host}:{port} ({err.strerror}); pass another {fix}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="hotdog demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", metavar="M",
                        help="finetune, scratch or a checkpoint path; repeat for several (default: finetune and scratch)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    args = parser.parse_args(argv)
    try:
        device, precision = predict.pick_runtime(args.device, args.precision)
        models = [predict.load_model(spec, device) for spec in dict.fromkeys(args.model or ["finetune", "scratch"])]
        check_port(args.host, args.port)
    except StageError as err:
        sys.exit(f"error: demo: {err}")
    for m in models:  # the first forward pass allocates; pay it before the first photo
        predict.run_model(m, torch.zeros(1, 3, m.image_size, m.image_size, dtype=torch.uint8), device, precision)

    import uvicorn

    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}/"
    print(f"hotdog demo: {url}  ({', '.join(m.name for m in models)} on {device.type}, {precision}); "
          f"Ctrl-C stops it", flush=True)
    uvicorn.run(create_app(models, device, precision), host=args.host, port=args.port, log_level="warning")


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hotdog demo: what is in the photo?</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { margin-bottom: .2rem; }
  .sub { color: #666; margin-top: 0; }
  #drop { border: 2px dashed #999; border-radius: 12px; padding: 2rem; text-align: center; cursor: pointer; }
  #drop.over { border-color: #d2691e; background: #fff6ee; }
  #photo { max-width: 100%; max-height: 22rem; display: none; margin: 1rem auto; border-radius: 8px; }
  #error { color: #b00020; font-weight: 600; min-height: 1.4rem; }
  .answers { display: flex; gap: 1rem; flex-wrap: wrap; }
  .answer { flex: 1 1 14rem; border: 1px solid #ddd; border-radius: 10px; padding: 1rem; }
  .answer h2 { font-size: 1rem; margin: 0 0 .4rem; color: #555; }
  .verdict { font-size: 1.8rem; font-weight: 700; color: #c4500a; overflow-wrap: anywhere; }
  .top { list-style: none; padding: 0; margin: .6rem 0 0; }
  .top li { display: grid; grid-template-columns: 1fr auto; gap: 0 .5rem; margin: .4rem 0; }
  .top .name { overflow-wrap: anywhere; }
  .top .pct { font-variant-numeric: tabular-nums; color: #555; }
  .bar { grid-column: 1 / -1; height: .6rem; background: #eee; border-radius: 4px; }
  .bar div { height: 100%; background: #2b5ea7; border-radius: 4px; }
  .top li:first-child .bar div { background: #c4500a; }
  .note { color: #666; font-size: .9rem; }
</style>
</head>
<body>
<h1>What is in the photo?</h1>
<p class="sub">Models: {{MODELS}} (on {{DEVICE}}). Photos up to {{LIMIT_TEXT}}; nothing leaves this machine.</p>
<label id="drop" for="file">Drop a photo here, or click to choose one
  <input id="file" type="file" accept="image/*" hidden>
</label>
<p id="error" role="alert"></p>
<img id="photo" alt="the photo you chose">
<div id="answers" class="answers" aria-live="polite"></div>
<p id="timing" class="note"></p>
<script>
const LIMIT = {{LIMIT}};
const $ = (id) => document.getElementById(id);
function show(file) {
  $("error").textContent = ""; $("answers").innerHTML = ""; $("timing").textContent = "";
  if (file.size > LIMIT) {
    $("error").textContent = `${file.name} is larger than the {{LIMIT_TEXT}} limit; choose a smaller photo, or shrink it first`;
    return;
  }
  const photo = $("photo");
  photo.style.display = "none";
  photo.src = URL.createObjectURL(file);
  $("answers").textContent = "Looking...";
  fetch("api/predict", {method: "POST", body: file,
                        headers: {"Content-Type": "application/octet-stream", "X-Filename": encodeURIComponent(file.name)}})
    .then(async (r) => {
      const body = await r.json().catch(() => ({error: `the server answered HTTP ${r.status}`}));
      $("answers").innerHTML = "";
      if (!r.ok) { $("error").textContent = body.error; return; }
      photo.style.display = "block";
      for (const a of body.answers) $("answers").appendChild(card(a));
      $("timing").textContent = `${body.ms} ms on the server`;
    })
    .catch((err) => { $("answers").innerHTML = ""; $("error").textContent = `the demo server did not answer (${err}); is it still running?`; });
}
// One model's answer: its top class, then a bar for each of its top classes. Class names
// are folder names, so they only ever go in as text, never as HTML.
function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}
function card(a) {
  const c = el("div", "answer");
  c.dataset.model = a.model;
  c.append(el("h2", "", a.model), el("div", "verdict", a.class));
  const list = el("ol", "top");
  for (const t of a.top_k) {
    const pct = `${(100 * t.probability).toFixed(1)}%`;
    const row = el("li");
    row.dataset.class = t.class;
    const bar = el("div", "bar"), fill = el("div");
    fill.style.width = pct;
    bar.append(fill);
    row.append(el("span", "name", t.class), el("span", "pct", pct), bar);
    list.append(row);
  }
  c.append(list);
  return c;
}
$("file").addEventListener("change", (e) => { if (e.target.files.length) show(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files.length) show(e.dataTransfer.files[0]);
});
</script>
</body>
</html>
"""

if __name__ == "__main__":
    main()
