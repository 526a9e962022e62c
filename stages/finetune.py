"""DVC stage `finetune`: the seed's fine-tuning of an ImageNet ResNet-18 (params: seed, train,
finetune). Reads the decoded images and the verified weights; writes models/finetune.pt,
metrics/finetune.json and metrics/finetune_epochs.json. Run: python -m stages.finetune
"""

from functools import partial

from stages import _training

RUN = "finetune"
PARAMS = _training.params(RUN)
outputs = partial(_training.outputs, run=RUN)

if __name__ == "__main__":
    _training.run_stage(RUN)
