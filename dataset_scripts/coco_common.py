"""Pieces shared by the COCO-based builders (RefCOCO_m, RefCOCO, RefCOCO+, RefCOCOg)."""

from __future__ import annotations

import io
import math
import os
import re
from typing import Any, Iterable, Optional, Sequence

from PIL import Image

from .features import is_usable_sentence

SOURCE = "coco2014"

# COCO 2014 category ids -> names (ids have gaps; the refer files use these ids).
COCO_CATEGORIES = dict(enumerate([
    None, "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None,
    None, "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", None,
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    None, "dining table", None, None, "toilet", None, "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None, "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
]))
COCO_CATEGORIES = {k: v for k, v in COCO_CATEGORIES.items() if v is not None}
# The 80 names in id order: CRIS's converter writes a referent's `cat` as an index into this.
COCO_CATEGORY_NAMES = tuple(COCO_CATEGORIES[i] for i in sorted(COCO_CATEGORIES))

_COCO_FILE_ID = re.compile(r"_(\d{6,})\.(?:jpg|jpeg|png)$", re.IGNORECASE)


def coco_image_id(file_name: str) -> str:
    """``COCO_train2014_000000581857.jpg`` -> ``"581857"``; other names -> their stem."""
    match = _COCO_FILE_ID.search(os.path.basename(file_name))
    return str(int(match.group(1))) if match else os.path.splitext(os.path.basename(file_name))[0]


def read_image(path: str) -> tuple[bytes, int, int]:
    """Bytes, width and height of an image file; ``ValueError`` naming it if it cannot be decoded."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # decode fully: a truncated JPEG fails here, not during training
            width, height = img.size
    except Exception as err:
        raise ValueError(f"unreadable image {path}: {err}") from err
    return data, width, height


def read_group_image(path: str, referent_ids: Sequence[str], rejects, split: str) -> Optional[tuple[bytes, int, int]]:
    """The image a group of referents shares, or None after logging one skip per referent (missing or corrupt)."""
    if not os.path.isfile(path):
        reason = f"missing image: {path}"
    else:
        try:
            return read_image(path)
        except ValueError as err:
            reason = f"corrupt image: {err}"
    for referent_id in referent_ids:
        rejects.skip(referent_id, reason, split=split)
    return None


def clip_bbox(bbox: Sequence[float], width: int, height: int) -> Optional[list[float]]:
    """Clip ``[x, y, w, h]`` to the image; None when nothing of it is inside."""
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    if x1 <= x0 or y1 <= y0:
        return None
    return [x0, y0, x1 - x0, y1 - y0]


def checked_bbox(
    bbox: Any, width: int, height: int, mask_box: list[float], *, xyxy: bool = False
) -> tuple[list[float], Optional[str]]:
    """An annotated box as ``[x, y, w, h]`` inside the image, and the fix applied to it (None if unchanged).

    ``bbox`` is ``[x, y, w, h]`` (COCO, refer) or, with ``xyxy=True``, ``[x_min, y_min, x_max, y_max]``
    (CRIS). A missing box is the mask's box (not a fix); a box that is not four finite numbers,
    has no positive width and height, or lies outside the image is replaced by the mask's box; a
    box partly outside is clipped. The fix reason says which.
    """
    if bbox is None:
        return mask_box, None
    try:
        values = [float(v) for v in bbox] if isinstance(bbox, (list, tuple)) else []
    except (TypeError, ValueError):
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        return mask_box, f"bbox is not 4 numbers, replaced by the mask's box: {bbox!r}"
    if xyxy:
        values = [values[0], values[1], values[2] - values[0], values[3] - values[1]]
    if values[2] <= 0 or values[3] <= 0:
        return mask_box, f"bbox has no positive width and height, replaced by the mask's box: {list(bbox)}"
    clipped = clip_bbox(values, width, height)
    if clipped is None:
        return mask_box, f"bbox outside the image, replaced by the mask's box: {list(bbox)}"
    return clipped, (None if clipped == values else "bbox clipped to the image")


def find_coco_image_dir(base: str, image_dir: Optional[str] = None) -> str:
    """The COCO train2014 image folder: ``image_dir`` (relative to ``base`` unless absolute) or the usual places."""
    if image_dir:
        path = image_dir if os.path.isabs(image_dir) else os.path.join(base, image_dir)
        return find_first([path], "COCO train2014 image folder", is_dir=True)
    candidates = [os.path.normpath(os.path.join(base, *p)) for p in (
        ("train2014",), ("images", "train2014"), ("images", "mscoco", "images", "train2014"), ("images",),
        ("..", "train2014"), ("..", "images", "train2014"), ("..", "images", "mscoco", "images", "train2014"),
    )]
    return find_first(candidates, "COCO train2014 image folder", is_dir=True)


def find_first(candidates: Iterable[str], what: str, is_dir: bool = False) -> str:
    """The first existing path; ``FileNotFoundError`` saying what was looked for and where."""
    candidates = list(candidates)
    for path in candidates:
        if (os.path.isdir(path) if is_dir else os.path.isfile(path)):
            return path
    raise FileNotFoundError(f"{what} not found; looked for: " + ", ".join(candidates))


def sentence_record_text(record: Any) -> Any:
    """The text of one refer/CRIS sentence record (a dict with ``sent`` or ``raw``) or of a plain string."""
    if isinstance(record, dict):
        sent = record.get("sent")
        return sent if is_usable_sentence(sent) else record.get("raw")
    return record


def parse_sentence_records(raw) -> list[str]:
    """Usable sentences, stripped, from refer/CRIS sentence records (dicts with 'sent' or 'raw') or strings."""
    texts = (sentence_record_text(record) for record in raw or [])
    return [text.strip() for text in texts if is_usable_sentence(text)]


def check_sentences(raw) -> tuple[list[str], Optional[str]]:
    """Usable sentences of a referent's sentence records, and what was wrong with them.

    With no usable sentence, the second value is the skip reason (no list, an empty list, or only
    blank sentences); otherwise it is the fix reason naming the blank sentences removed, or None.
    """
    if raw is None:
        return [], "no sentence list"
    if not isinstance(raw, (list, tuple)):
        return [], f"sentences is a {type(raw).__name__}, not a list"
    if not raw:
        return [], "empty sentence list"
    sentences = parse_sentence_records(raw)
    blank = [i for i, record in enumerate(raw) if not is_usable_sentence(sentence_record_text(record))]
    if not sentences:
        return [], f"no usable sentence: all {len(raw)} blank"
    return sentences, (f"blank sentences removed: indices {blank}" if blank else None)
