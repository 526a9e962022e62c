"""DVC stage `finetune`: the seed's fine-tuning of an ImageNet ResNet-18 (params: finetune).

Reads the decoded images and the verified weights; writes models/finetune.pt,
metrics/finetune.json and metrics/finetune_epochs.json. Run: python -m stages.finetune
"""

from functools import partial

from stages import train
from stages.errors import run_main

RUN = "finetune"
SECTIONS = train.sections(RUN)
outputs = partial(train.outputs, run=RUN)

if __name__ == "__main__":
    run_main(RUN, partial(train.main, RUN))
