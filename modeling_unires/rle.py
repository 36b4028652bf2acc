"""COCO run-length encoding, the mask format of every MRES dataset, via pycocotools."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def decode_rle(rle: dict) -> np.ndarray:
    """COCO RLE `{"size": [h, w], "counts": str | bytes}` → bool (h, w) array."""
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return mask_utils.decode({"size": list(rle["size"]), "counts": counts}).astype(bool)
