# Two commands do all the set-up: `make run` (the whole pipeline) and `make test`.
# `make ui` serves the pipeline as a Prefect deployment, with a local Prefect server.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The browser test drives Debian's Chromium; Playwright never downloads a browser here.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Stage commands say `python -m stages.<name>`: the venv's bin goes first on PATH.
WITH_VENV := PATH="$(abspath $(BIN)):$$PATH"

.PHONY: run test test-fast ui worker demo bench experiments clean-venv

# The venv is rebuilt when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install --no-compile -e '.[test,s3]'
	# Byte-compiled here, on both cores (27 s), rather than by pip one file at a time: where
	# PYTHONDONTWRITEBYTECODE is set, as on these machines, Python never writes what it
	# compiles, and every stage process then compiled torch again: 5 s to import it, not 2.6.
	# -x: two files written for Python 3.12 (torch's tests, whenever's typing) do not compile
	# on 3.11; should another Python find others, they are compiled on import, as before.
	$(BIN)/python -m compileall -q -j 0 -x '(py312_intrinsics|_typing_312)\.py$$' $(VENV)/lib > /dev/null \
		|| echo "note: a few files in $(VENV) did not byte-compile (written for another Python)"
	touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

run: $(VENV)/.installed
	$(WITH_VENV) dvc repro

# The machines that run this project vary (AMX Xeon, AVX512-BF16 Zen 4, AVX2-only Zen 3),
# and torch's kernels vary with them. The numeric tests run again capped at AVX2, so that
# green on any of them means green on an AVX2-only CPU, and once more on ATen's generic
# kernels, which AVX-512 builds also take for some ops (uint8 resize) and an AVX2-only
# machine would otherwise never run. Those marked `repeats` stay out of both reruns: each
# compares a training run with a second run of itself on the same kernels, whatever the
# ISA, and they were 75 of the 90 s that each rerun took.
AVX2_CAPS := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2
GENERIC_CAPS := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41

# Most of the suite waits on subprocesses and servers, so two pytest workers share the two
# cores well. --dist loadfile keeps a file's tests (and its module fixtures: one Prefect
# server, one reference run) in one worker, in order. (Running the longest files first, with
# --no-loadscope-reorder, measured slower here: 20 min 15 s against 17 min 33 s.)
PARALLEL := -n 2 --dist loadfile

test: $(VENV)/.installed $(CHROMIUM)
	$(WITH_VENV) python -m pytest $(PARALLEL) --durations=15
	$(WITH_VENV) $(AVX2_CAPS) python -m pytest $(PARALLEL) -m "numeric and not repeats"
	$(WITH_VENV) $(GENERIC_CAPS) python -m pytest $(PARALLEL) -m "numeric and not repeats"

# The edit-test loop: the tests not marked slow. tests/lanes.py marks a test slow from what it
# uses (a subprocess, a server, a browser, a training run) and stops any other test that
# starts one, so this lane starts none and needs no Chromium.
test-fast: $(VENV)/.installed
	$(WITH_VENV) python -m pytest $(PARALLEL) -m "not slow" -q --durations=5

ui: $(VENV)/.installed
	$(WITH_VENV) python -m flows.ui

# A Prefect worker for this clone (hotdog/runner/worker.py): creates the process work pool in
# prefect.yaml if missing, deploys prefect.yaml's flows to it and runs them here, one at a
# time. Uses the server at PREFECT_API_URL, or starts a local one as `make ui` does.
worker: $(VENV)/.installed
	$(WITH_VENV) hotdog worker

# A page on http://127.0.0.1:8000/ to try a photo on both trained models (after make run).
# Elsewhere: make demo DEMO_ARGS="--port 8080 --model finetune"
DEMO_ARGS ?=
demo: $(VENV)/.installed
	$(WITH_VENV) hotdog demo $(DEMO_ARGS)

# The seed's code against the finetune stage; after `make run`, on the real data.
# Elsewhere: make bench BENCH_ARGS="--data /tmp/benchdata --weights w.pth"
BENCH_ARGS ?=
bench: $(VENV)/.installed
	$(WITH_VENV) python -m benchmarks.bench $(BENCH_ARGS)

# The chapter's exercises (experiments.yaml) as DVC experiments, then reports/experiments.md.
# A quick pass on a CPU: make experiments EXP_ARGS="-S train.epochs=1 -S train.image_size=64"
EXP_ARGS ?=
experiments: $(VENV)/.installed
	$(WITH_VENV) hotdog experiments run $(EXP_ARGS)

clean-venv:
	rm -rf $(VENV)
