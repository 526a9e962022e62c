"""DVC stage `scratch`: the seed's baseline, the same network from random init (params: seed,
train, scratch). Reads the decoded images; writes models/scratch.pt, metrics/scratch.json and
metrics/scratch_epochs.json. Run: python -m stages.scratch
"""

from functools import partial

from stages import _training

RUN = "scratch"
PARAMS = _training.params(RUN)
outputs = partial(_training.outputs, run=RUN)

if __name__ == "__main__":
    _training.run_stage(RUN)
