"""The names the pipeline is built from: its splits, its classes, its two training runs and
its stages."""

SPLITS = ("train", "test")
# d2l's hotdog.zip's classes, in ImageFolder's order (sorted folder names): the ImageNet hotdog
# head and the synthetic stand-in are built for them. Every other use reads a data set's
# classes from its manifest (hotdog.core.schema.classes_of).
CLASSES = ("hotdog", "not-hotdog")
RUNS = ("finetune", "scratch")
# dvc.yaml's stages, in its order (tests/test_seams.py checks that they agree).
STAGES = ("source", "download", "weights", "manifest", "decode", "finetune", "scratch", "evaluate", "export", "report")


def imagenet_hotdog_fits(classes) -> bool:
    """Whether the ImageNet hotdog head (head_init: imagenet-hotdog) fits these classes: it is
    made for d2l's two, in either order."""
    return sorted(classes) == sorted(CLASSES)


def imagenet_hotdog_misfit(classes) -> str:
    """Why the ImageNet hotdog head does not fit these classes, in words."""
    return (f"head_init imagenet-hotdog starts the head from ImageNet's hotdog class, which fits the classes "
            f"{' and '.join(CLASSES)} only, not {', '.join(classes)}")
