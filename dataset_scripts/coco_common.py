"""Pieces shared by the COCO-based builders (RefCOCO_m, RefCOCO, RefCOCO+, RefCOCOg)."""

from __future__ import annotations

import io
import os
import re
from typing import Iterable, Optional, Sequence

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
        reason = f"missing image {path}"
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


def find_first(candidates: Iterable[str], what: str, is_dir: bool = False) -> str:
    """The first existing path; ``FileNotFoundError`` saying what was looked for and where."""
    candidates = list(candidates)
    for path in candidates:
        if (os.path.isdir(path) if is_dir else os.path.isfile(path)):
            return path
    raise FileNotFoundError(f"{what} not found; looked for: " + ", ".join(candidates))


def parse_sentence_records(raw) -> list[str]:
    """Usable sentences, stripped, from refer/CRIS sentence records (dicts with 'sent' or 'raw') or strings."""
    texts = (s.get("sent") or s.get("raw") if isinstance(s, dict) else s for s in raw or [])
    return [text.strip() for text in texts if is_usable_sentence(text)]
