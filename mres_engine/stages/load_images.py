"""Stage 1, load images: each record's image opened as RGB by the one pixel rule, made upright, its size checked
against the file.

The first stage of every batch (the records come from :func:`mres_engine.readers.manifest.read_shard_input`).
A missing, unreadable or corrupt image is a reject of the whole image.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import replace

from PIL import Image, JpegImagePlugin, UnidentifiedImageError

from ..records import ImageRecord, clip_box, image_path, object_referent_id
from .base import Reject, StageOutput


# EXIF orientation -> the transpose that shows the photo upright (as PIL.ImageOps.exif_transpose does).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112


def orient_box(bbox, orientation: int, width: int, height: int) -> list[float]:
    """An ``[x, y, w, h]`` box of the stored ``width`` x ``height`` pixels, in the frame EXIF ``orientation`` shows upright."""
    x, y, w, h = (float(v) for v in bbox)
    corners = [(x, y), (x + w, y + h)]
    maps = {
        2: lambda u, v: (width - u, v),
        3: lambda u, v: (width - u, height - v),
        4: lambda u, v: (u, height - v),
        5: lambda u, v: (v, u),
        6: lambda u, v: (height - v, u),
        7: lambda u, v: (height - v, width - u),
        8: lambda u, v: (v, width - u),
    }
    (ax, ay), (bx, by) = (maps[orientation](u, v) for u, v in corners)
    x0, y0 = min(ax, bx), min(ay, by)
    return [x0, y0, max(ax, bx) - x0, max(ay, by) - y0]


def _error_text(err: Exception) -> str:
    # PIL names the BytesIO it read ("<_io.BytesIO object at 0x7f...>"): the same file must give the same reason.
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the image bytes", str(err)) or type(err).__name__


def _upright_bytes(image: Image.Image, upright: Image.Image) -> bytes:
    """The upright pixels encoded again, without the EXIF orientation tag: JPEG (quality 95, the file's
    chroma subsampling and ICC profile) for a JPEG, else PNG (lossless)."""
    exif = image.getexif()
    exif.pop(_EXIF_ORIENTATION_TAG, None)
    buffer = io.BytesIO()
    extra = {"exif": exif.tobytes()} if len(exif) else {}
    if image.info.get("icc_profile"):
        extra["icc_profile"] = image.info["icc_profile"]
    if image.format == "JPEG":
        subsampling = JpegImagePlugin.get_sampling(image)
        upright.save(buffer, "JPEG", quality=95, **({"subsampling": subsampling} if subsampling >= 0 else {}), **extra)
    else:
        upright.save(buffer, "PNG", **extra)
    return buffer.getvalue()


class LoadImages:
    """Open each record's image as RGB (``image``) and keep the bytes to store (``image_bytes``).

    A missing, unreadable or corrupt image is a :class:`Reject` of the whole image (its reason
    names the file, never a memory address). The size in the manifest is checked against the
    file; a difference is corrected to the file's size and the boxes are clipped to it (noted in
    ``fixes``), since masks must have the file's size; a box left with no area is a
    :class:`Reject` of its object referent id.

    Photos are made upright (:attr:`definition`): an image with an EXIF orientation is turned
    as ``datasets``' ``Image`` feature and every viewer turn it, its boxes (given, as COCO and
    Objects365 give them, in the stored pixel frame: the manifest's width and height are the
    stored ones) are turned with it, and it is stored upright without the orientation tag (noted
    in ``fixes``), so that the masks, the stored image and what ``load_dataset`` decodes agree.
    When the manifest's size is the upright one instead, its boxes are taken as upright already.
    The stages see the pixels of the one image→RGB rule (``modeling_unires``' ``to_rgb_image``: 16-bit scaled to
    8 bits, alpha composited on white, palette and CMYK converted), the ones UniRES's processor gives the same file;
    the image is stored as it is (or upright, re-encoded).
    """

    name = "load_images"
    definition = (
        "images are stored upright: a photo with an EXIF orientation is turned as datasets and viewers turn it, "
        "its detection boxes (given in the stored pixel frame, as in COCO and Objects365) are turned with it, and "
        "it is stored re-encoded without the orientation tag (JPEG at quality 95, other formats as PNG), so masks, "
        "boxes and the decoded image share one frame; the models see the pixels of UniRES's image processor "
        "(16-bit scaled to 8 bits as round(v / 257), alpha composited on white, palette and CMYK converted)"
    )

    def __init__(self, image_root: str | os.PathLike | None = None):
        self.image_root = image_root

    def __call__(self, records: list[ImageRecord]) -> StageOutput:
        # Imported here: modeling_unires brings transformers' image utilities (seconds), and building the stages
        # in a launcher process stays cheap.
        from modeling_unires.image_processing_unires import to_rgb_image

        out = StageOutput()
        for record in records:
            path = image_path(record.file_name, self.image_root)
            try:
                with open(path, "rb") as f:
                    data = f.read()
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
                    orientation = img.getexif().get(_EXIF_ORIENTATION_TAG)
                    orientation = orientation if orientation in _EXIF_TRANSPOSE else None
                    # The one pixel rule (16-bit, alpha on white, palette, CMYK), without its EXIF turn: this stage
                    # turns the pixels itself below, with the boxes. The rule does not depend on where a pixel sits,
                    # so turning after it gives the processor's pixels of the same file (tests/test_pixel_rule.py).
                    image = to_rgb_image(img, exif_transpose=False)
                    stored_bytes = data
                    if orientation is not None:
                        stored_bytes = _upright_bytes(img, img.transpose(_EXIF_TRANSPOSE[orientation]))
            except FileNotFoundError:
                out.rejects.append(Reject(record.image_id, self.name, f"missing image: {path}"))
                continue
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
                out.rejects.append(Reject(record.image_id, self.name, f"corrupt image: {path}: {_error_text(err)}"))
                continue
            width, height, boxes, fixes = record.width, record.height, record.boxes, list(record.fixes)
            stored = (image.width, image.height)
            upright_given = (orientation in (5, 6, 7, 8) and stored != stored[::-1] and (width, height) == stored[::-1])
            if orientation is not None and upright_given:
                image = image.transpose(_EXIF_TRANSPOSE[orientation])  # the manifest's boxes are upright already
                fixes.append(f"EXIF orientation {orientation} applied: stored upright; the manifest's size and boxes are upright already")
            if (image.width, image.height) != (width, height):
                fixes.append(f"size {width}x{height} in the manifest, {image.width}x{image.height} in the file")
                width, height = image.width, image.height
                boxes = []
                for box in record.boxes:
                    clipped = clip_box(box["bbox"], width, height)
                    if clipped[2] <= 0 or clipped[3] <= 0:
                        referent_id = object_referent_id(record.image_id, box["box_id"])
                        out.rejects.append(Reject(record.image_id, self.name, "box with no area inside the image file", referent_id))
                    else:
                        boxes.append({**box, "bbox": clipped})
            if orientation is not None and not upright_given:
                image = image.transpose(_EXIF_TRANSPOSE[orientation])
                boxes = [{**box, "bbox": orient_box(box["bbox"], orientation, width, height)} for box in boxes]
                width, height = image.width, image.height
                fixes.append(f"EXIF orientation {orientation} applied: stored upright, boxes turned with the pixels")
            out.records.append(replace(record, width=width, height=height, boxes=boxes, fixes=fixes, image=image,
                                       image_bytes=stored_bytes))
        return out
