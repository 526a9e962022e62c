"""Photos the way people see them: a phone stores a portrait photo as its sensor read it,
sideways, with an EXIF Orientation tag that photo viewers and browsers apply (so the demo
page shows it turned). Decoding, `hotdog predict` and the report's thumbnails apply it too,
so the model trains on and is asked about what a person sees, as Ultralytics does. An image
without the tag, as every image of d2l's hotdog.zip, is left as it is."""

from __future__ import annotations

from PIL import Image

ORIENTATION = 0x0112  # EXIF's Orientation tag: 1 is upright, 2 to 8 a mirror and/or a turn
# What undoes each orientation, as the EXIF standard (and Pillow's ImageOps.exif_transpose)
# has it. Applied directly rather than through exif_transpose, which also rewrites the EXIF
# block and so fails on a photo whose other tags are malformed (a camera's Make written as a
# number), though its pixels and its orientation read fine.
UNDO = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90}


def upright(img: Image.Image) -> Image.Image:
    """`img` turned and mirrored as its EXIF orientation says, or `img` itself when it says
    nothing (or 1, or something unreadable: a damaged tag is no reason to lose a photo)."""
    # The pixels first, so that a file whose pixels do not decode says so here rather than
    # inside getexif() (a PNG may keep its EXIF after its pixels), where it would pass as a
    # damaged tag and leave a half-decoded image behind.
    img.load()
    try:
        orientation = img.getexif().get(ORIENTATION, 1)
    except Exception:  # PIL raises many types for a damaged EXIF block
        return img
    method = UNDO.get(orientation) if isinstance(orientation, int) else None
    return img if method is None else img.transpose(method)
