#!/usr/bin/env bash
# Is the CUDA training stage repeatable, and if not, why? Two uninterrupted finetune runs as
# shipped, then two with cuDNN's autotuner off (cudnn.benchmark = False, patched into a copy),
# compared tensor by tensor. Python's warnings are all shown, so every kernel that
# `use_deterministic_algorithms(True, warn_only=True)` lets run without a deterministic
# version is named in the logs. Run from the repo root on the device machine with .whl
# carried (see gpu.sh). Knobs for a CPU smoke run: DEVICE, N (train images per class), EPOCHS.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=always out=${OUT:-/tmp/repeat-out}; mkdir -p "$out"
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
p["train"].update(epochs=int(os.environ.get("EPOCHS", 2)), batch_size=64, device=os.environ.get("DEVICE", "cuda"))
p["runtime"]["resume"] = False
yaml.dump(p, open("params.yaml", "w"))
os.makedirs("data/weights", exist_ok=True)
torch.manual_seed(0)
torch.save(torchvision.models.resnet18().state_dict(), "data/weights/resnet18.pth")
PY
python3 -m stages.manifest > /dev/null && python3 -m stages.decode > /dev/null
run() {  # name
  python3 -m stages.finetune > $out/$1.log 2>&1; echo "$1 rc=$?"; grep -E "/[0-9]+: loss" $out/$1.log
  cp models/finetune.pt /tmp/$1.pt
}
run a; run b
echo "== kernels without a deterministic version (warn_only):"
grep -ho "[A-Za-z_0-9.:]* does not have a deterministic implementation" $out/a.log | sort | uniq -c
sed -i 's/torch.backends.cudnn.benchmark = True/torch.backends.cudnn.benchmark = False/' hotdog/model/hardware.py
grep -c "benchmark = False" hotdog/model/hardware.py
run c; run d
python3 - <<'PY'
import torch
def cmp(p, q):
    x, y = (torch.load(f"/tmp/{r}.pt", weights_only=True)["state_dict"] for r in (p, q))
    return all(torch.equal(x[k], y[k]) for k in x), max((x[k].float() - y[k].float()).abs().max().item() for k in x)
print("a vs b (as shipped, cudnn.benchmark on):", cmp("a", "b"))
print("c vs d (cudnn.benchmark off):", cmp("c", "d"))
PY
