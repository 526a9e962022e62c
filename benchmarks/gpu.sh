#!/usr/bin/env bash
# The GPU measurement of issue #4, prepared as one short script for a CUDA machine.
#
#   bash benchmarks/gpu.sh wheels   here, once: the wheels the device image lacks, into .whl/
#   bash benchmarks/gpu.sh          there, from the repo root (carry .whl):
#     1. python -m hotdog.training.cuda_check: the CUDA paths against their CPU counterparts;
#     2. python -m hotdog.data.synthetic: 2,800 photo-sized synthetic PNGs (the real set's shape);
#     3. python -m benchmarks.bench --record: the seed's code, then the finetune stage,
#        3 epochs at 224 px, batch 128, appended to benchmarks/RESULTS.md.
#   Logs and the updated RESULTS.md go to $OUT (or /tmp/gpu-out); copy the entry back by hand.
#
# Knobs (for a smoke run on a CPU): PYTHON, GPU_CHECK_ARGS ("images size batch" for
# cuda_check), GPU_BENCH_TRAIN and GPU_BENCH_TEST (images per class), GPU_BENCH_EPOCHS,
# GPU_BENCH_WORK (scratch folder), GPU_BENCH_RESULTS.
# The device image has torch, torchvision, pyarrow, pillow and tqdm, but not pydantic,
# ruamel.yaml or the demo page's fastapi and uvicorn; the pins below are the versions this
# project's venv resolves to.
set -euo pipefail

if [ "${1:-}" = wheels ]; then
  rm -rf .whl && mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
  exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl pydantic==2.14.4 pydantic_core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 ruamel.yaml==0.19.1 \
    fastapi==0.150.0 starlette==1.10.0 uvicorn==0.54.0 anyio==4.16.0 idna==3.20 h11==0.16.0 click==8.5.1 \
    annotated-doc==0.0.7 opentelemetry-api==1.45.2
fi

PYTHON=${PYTHON:-python3}
out=${OUT:-/tmp/gpu-out}
work=${GPU_BENCH_WORK:-/tmp/gpu-bench}
results=${GPU_BENCH_RESULTS:-benchmarks/RESULTS.md}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1

if ! "$PYTHON" -c 'import pydantic, ruamel.yaml' 2>/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$work/site" .whl/*.whl
  export PYTHONPATH="$work/site"
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
fi

# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of numbers: images, size, batch
"$PYTHON" -m hotdog.training.cuda_check ${GPU_CHECK_ARGS:-} 2>&1 | tee "$out/cuda_check.log"

data="$work/benchdata"
rm -rf "$data"
"$PYTHON" -m hotdog.data.synthetic "$data" --train "${GPU_BENCH_TRAIN:-1000}" --test "${GPU_BENCH_TEST:-400}"
# Random stand-in weights: the machine cannot download torchvision's.
"$PYTHON" -c 'import sys, torch, torchvision; torch.manual_seed(0); torch.save(torchvision.models.resnet18().state_dict(), sys.argv[1])' \
  "$work/weights.pth"

"$PYTHON" -m benchmarks.bench --data "$data" --weights "$work/weights.pth" \
  --epochs "${GPU_BENCH_EPOCHS:-3}" --record --results "$results" 2>&1 | tee "$out/bench.log"
cp "$results" "$out/RESULTS.md"
