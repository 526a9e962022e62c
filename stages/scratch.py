"""DVC stage `scratch`: the seed's baseline, the same network from random init (params: scratch).

Reads the decoded images; writes models/scratch.pt,
metrics/scratch.json and metrics/scratch_epochs.json. Run: python -m stages.scratch
"""

from functools import partial

from stages import train
from stages.errors import run_main

RUN = "scratch"
SECTIONS = train.sections(RUN)
outputs = partial(train.outputs, run=RUN)

if __name__ == "__main__":
    run_main(RUN, partial(train.main, RUN))
