#!/usr/bin/env bash
# The training stage itself on CUDA (beside benchmarks/gpu.sh), killed with SIGKILL after its
# first saved epoch and resumed, against an uninterrupted run. Run from the repo root on the
# device machine with .whl carried (see gpu.sh); RESULTS.md has what it printed.
# Knobs for a CPU smoke run: DEVICE, N (train images per class), EPOCHS, SIZE.
set -uo pipefail
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp/smoke-out}; mkdir -p "$out"; export out
if ! python3 -c 'import pydantic, ruamel.yaml' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
w=/tmp/stage; rm -rf $w; mkdir -p $w; cp -r hotdog stages params.yaml $w/; cd $w
python3 -m hotdog.data.synthetic data/hotdog --train "${N:-150}" --test 50 > $out/make_data.log 2>&1
python3 - <<'PY'
import os
import torch, torchvision
from ruamel.yaml import YAML
yaml = YAML()
p = yaml.load(open("params.yaml"))
p["train"].update(epochs=int(os.environ.get("EPOCHS", 4)), batch_size=64, device=os.environ.get("DEVICE", "cuda"),
                  image_size=int(os.environ.get("SIZE", 224)))
yaml.dump(p, open("params.yaml", "w"))
os.makedirs("data/weights", exist_ok=True)
torch.manual_seed(0)
torch.save(torchvision.models.resnet18().state_dict(), "data/weights/resnet18.pth")
PY
python3 -m stages.manifest > $out/stages.log 2>&1 && python3 -m stages.decode >> $out/stages.log 2>&1 || { cat $out/stages.log; exit 1; }
echo "== uninterrupted"; python3 -m stages.finetune > $out/whole.log 2>&1; echo rc=$?; grep -E "finetune:|/[0-9]+: loss|error" $out/whole.log
cp metrics/finetune.json $out/whole.json; cp models/finetune.pt /tmp/whole.pt; rm -rf models metrics
echo "== killed after its first saved epoch"
setsid python3 -m stages.finetune > $out/killed.log 2>&1 & pid=$!
for i in $(seq 1200); do ls .hotdog/resume/finetune-*.pt >/dev/null 2>&1 && break; sleep 0.05; done
kill -9 -- -$pid; wait $pid; echo "killed: rc=$?, states: $(ls .hotdog/resume)"
echo "== resumed"; python3 -m stages.finetune > $out/resumed.log 2>&1; echo rc=$?; grep -E "finetune:|/[0-9]+: loss|error" $out/resumed.log
cp metrics/finetune.json $out/resumed.json
python3 - <<'PY'
import json, os
import torch
out = os.environ["out"]
a, b = json.load(open(f"{out}/whole.json")), json.load(open(f"{out}/resumed.json"))
print({k: (a[k], b[k]) for k in ("loss", "train_acc", "test_acc", "augment", "precision", "processes")})
x = torch.load("/tmp/whole.pt", weights_only=True)["state_dict"]
y = torch.load("models/finetune.pt", weights_only=True)["state_dict"]
diff = max((x[k].float() - y[k].float()).abs().max().item() for k in x)
print("checkpoints bit-identical:", all(torch.equal(x[k], y[k]) for k in x), "max abs diff:", diff)
PY
