#!/usr/bin/env bash
# The GPU measurements (issues #4 and #22), prepared as one short script for a CUDA machine.
#
#   bash benchmarks/gpu.sh wheels   here, once: the wheels the device image lacks, into .whl/
#   bash benchmarks/gpu.sh          there, from the repo root (carry .whl):
#     1. python -m hotdog.training.cuda_check: the CUDA paths against their CPU counterparts,
#        and no host wait in a training step (a failed check ends the script with status 1,
#        but only after the measurements: a GPU session is short);
#     2. python -m hotdog.data.synthetic: 2,800 photo-sized synthetic PNGs (the real set's shape);
#     3. python -m benchmarks.bench --record: the seed's code, then the finetune stage,
#        3 epochs at 224 px, batch 128, then bare steps, appended to benchmarks/RESULTS.md;
#     4. python -m benchmarks.e2e --record: a cold `dvc repro` of the whole chapter (5 epochs,
#        both models, the synthetic JPEGs), each stage's times and a timeline figure;
#     5. python -m benchmarks.step --record: faster-step candidates (fused SGD, a CUDA graph of
#        the whole step, the autotuner, nondeterministic kernels), eval batch sizes, a second
#        batch shape, and CUDA's start beside reading inputs.
#   Logs, the timeline and the updated RESULTS.md go to $OUT (or /tmp/gpu-out); copy them back
#   by hand (the timeline into benchmarks/timelines/).
#
# Knobs (for a smoke run on a CPU): PYTHON, GPU_CHECK_ARGS ("images size batch" for
# cuda_check), GPU_BENCH_TRAIN and GPU_BENCH_TEST (images per class), GPU_BENCH_EPOCHS,
# GPU_BENCH_WORK (scratch folder), GPU_BENCH_RESULTS, and GPU_BENCH_ARGS, GPU_E2E_ARGS and
# GPU_STEP_ARGS (more arguments for steps 3, 4 and 5).
# The device image has torch, torchvision, pyarrow, pillow, tqdm, matplotlib, onnx and
# onnxruntime, but not dvc, pydantic, ruamel.yaml (and its C loader) or the demo page's fastapi and uvicorn.
# `wheels` resolves those with their dependencies for the image's Python 3.12 (about 30 MB).
# hydra-core's antlr4 runtime comes only as source: it is pure Python, so it is built here.
set -euo pipefail

if [ "${1:-}" = wheels ]; then
  rm -rf .whl && mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
  exec python3 -m pip download -q --only-binary=:all: --find-links .whl --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl dvc==3.67.1 pydantic==2.14.4 ruamel.yaml==0.19.1 ruamel.yaml.clib==0.2.15 fastapi==0.150.0 \
    uvicorn==0.54.0
fi

PYTHON=${PYTHON:-python3}
out=${OUT:-/tmp/gpu-out}
work=${GPU_BENCH_WORK:-/tmp/gpu-bench}
results=${GPU_BENCH_RESULTS:-benchmarks/RESULTS.md}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1

if ! "$PYTHON" -c 'import pydantic, ruamel.yaml, dvc' 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" .whl/*.whl
  export PYTHONPATH="$work/site"
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
fi

# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of numbers: images, size, batch
checked=0
"$PYTHON" -m hotdog.training.cuda_check ${GPU_CHECK_ARGS:-} 2>&1 | tee "$out/cuda_check.log" || checked=$?

data="$work/benchdata"
rm -rf "$data"
"$PYTHON" -m hotdog.data.synthetic "$data" --train "${GPU_BENCH_TRAIN:-1000}" --test "${GPU_BENCH_TEST:-400}"
# Random stand-in weights: the machine cannot download torchvision's.
"$PYTHON" -c 'import sys, torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])' \
  "$work/weights.pth"

# shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of options
"$PYTHON" -m benchmarks.bench --data "$data" --weights "$work/weights.pth" \
  --epochs "${GPU_BENCH_EPOCHS:-3}" --record --results "$results" ${GPU_BENCH_ARGS:-} 2>&1 | tee "$out/bench.log"

# The synthetic JPEGs are made inside e2e, untimed. The timeline goes beside RESULTS.md, so the
# entry's link holds once both are copied back; $OUT gets a copy of it and of its raw figures.
timeline="$(dirname "$results")/timelines/e2e-$(date -u +%Y-%m-%d-%H%M%S).png"
# shellcheck disable=SC2086  # GPU_E2E_ARGS is a list of options
"$PYTHON" -m benchmarks.e2e --weights "$work/weights.pth" --work "$work/e2e" --record --results "$results" \
  --timeline "$timeline" ${GPU_E2E_ARGS:-} 2>&1 | tee "$out/e2e.log"
cp "$timeline" "$out/e2e-timeline.png"
cp "${timeline%.png}.json" "$out/e2e-timeline.json"
cp "$results" "$out/RESULTS.md"  # and again at the end; $OUT holds 8 files at most, and this makes 8

# Last: its CUDA-graph candidate has never run on a GPU (a candidate that fails is a row
# saying why, but a crash of the process would end the script here, after the rest is in).
# shellcheck disable=SC2086  # GPU_STEP_ARGS is a list of options
"$PYTHON" -m benchmarks.step --record --results "$results" ${GPU_STEP_ARGS:-} 2>&1 | tee "$out/step.log"
cp "$results" "$out/RESULTS.md"
if [ "$checked" != 0 ]; then
  echo "gpu.sh: hotdog.training.cuda_check FAILED (exit $checked): see cuda_check.log" >&2
  exit 1
fi
