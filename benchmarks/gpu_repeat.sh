#!/usr/bin/env bash
# Is the CUDA training stage repeatable at all? Two uninterrupted runs with augment auto
# (device) and two with workers, compared as gpu_resume.sh compares a resumed run with an
# uninterrupted one. Run from the repo root on the device machine with .whl carried.
set -uo pipefail
export PYTHONUNBUFFERED=1 out=${OUT:-/tmp/repeat-out}; mkdir -p "$out"
if ! python3 -c 'import pydantic, ruamel.yaml' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
w=/tmp/stage; rm -rf $w; mkdir -p $w; cp -r hotdog stages params.yaml $w/; cd $w
python3 -m hotdog.make_data data/hotdog --train 150 --test 50 > $out/make_data.log 2>&1
python3 - <<'PY'
import os
import torch, torchvision
from ruamel.yaml import YAML
yaml = YAML()
p = yaml.load(open("params.yaml"))
p["train"].update(epochs=4, batch_size=64, device="cuda")
yaml.dump(p, open("params.yaml", "w"))
os.makedirs("data/weights", exist_ok=True)
torch.manual_seed(0)
torch.save(torchvision.models.resnet18().state_dict(), "data/weights/resnet18.pth")
PY
python3 -m stages.manifest > /dev/null && python3 -m stages.decode > /dev/null
for run in a b; do
  python3 -m stages.finetune > $out/$run.log 2>&1; echo "$run rc=$?"; grep -E "/4: loss" $out/$run.log
  cp models/finetune.pt /tmp/$run.pt
done
for augment in workers; do
  sed -i "s/augment: auto/augment: $augment/" params.yaml
  for run in c d; do python3 -m stages.finetune > $out/$run.log 2>&1; echo "$run ($augment) rc=$?"; grep -E "/4: loss" $out/$run.log; cp models/finetune.pt /tmp/$run.pt; done
done
python3 - <<'PY'
import torch
def cmp(p, q):
    x, y = (torch.load(f"/tmp/{r}.pt", weights_only=True)["state_dict"] for r in (p, q))
    return all(torch.equal(x[k], y[k]) for k in x), max((x[k].float() - y[k].float()).abs().max().item() for k in x)
print("a vs b (augment auto=device):", cmp("a", "b"))
print("c vs d (augment workers):", cmp("c", "d"))
PY
