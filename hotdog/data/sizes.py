"""The sizes of the seed's transforms, without torch: the decode stage needs them too."""


def eval_resize(image_size: int) -> int:
    """The side the seed's test transform squashes to: its 256 for a 224 crop, scaled. The
    decode stage resizes each image's shorter side to it."""
    return round(image_size * 256 / 224)
