"""The names the pipeline is built from: its splits, its classes, its two training runs and
its stages."""

SPLITS = ("train", "test")
# Label order is ImageFolder's (sorted folder names), so label 0 is hotdog, as in the seed.
CLASSES = ("hotdog", "not-hotdog")
RUNS = ("finetune", "scratch")
# dvc.yaml's stages, in its order (tests/test_seams.py checks that they agree).
STAGES = ("download", "weights", "manifest", "decode", "finetune", "scratch", "evaluate", "report")
POSITIVE = 0  # ROC-AUC scores "is it a hotdog?", as the task is named
