"""COCO RLE mask helpers on pycocotools (no hand-written codec).

An RLE here is the dict pycocotools produces, with ``counts`` as ``str`` so that it fits the
``string`` column of :data:`dataset_scripts.features.MRES_FEATURES`.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def _to_coco(rle: dict[str, Any]) -> dict[str, Any]:
    """The dict pycocotools expects: counts as bytes, size as a list of ints."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"Not a COCO RLE dict with 'size' and 'counts': {rle!r:.200}")
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE (COCO iscrowd annotations)
        return mask_utils.frPyObjects({"size": list(rle["size"]), "counts": counts}, *rle["size"])
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [int(s) for s in rle["size"]], "counts": counts}


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Encode a boolean ``(H, W)`` array as COCO compressed RLE ``{"size": [h, w], "counts": str}``."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"encode_mask expects a 2-D (H, W) mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(bool, copy=False).astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (compressed str/bytes counts or uncompressed list) to a bool ``(H, W)`` array."""
    return mask_utils.decode(_to_coco(rle)).astype(bool)


def mask_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels, computed on the RLE without decoding."""
    return int(mask_utils.area(_to_coco(rle)))


def mask_bbox(rle: dict[str, Any]) -> list[float]:
    """Tight ``[x, y, w, h]`` box of the foreground in pixels (all zeros for an empty mask)."""
    return [float(v) for v in mask_utils.toBbox(_to_coco(rle))]


def mask_from_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict[str, Any]:
    """Rasterise COCO polygons (``[[x0, y0, x1, y1, ...], ...]``) into one RLE of size ``(height, width)``.

    Parts of a polygon outside the image are clipped by the rasteriser; a polygon with fewer
    than three points raises ``ValueError``.
    """
    polygons = [list(map(float, p)) for p in polygons]
    if not polygons:
        raise ValueError("mask_from_polygons got no polygon")
    for i, poly in enumerate(polygons):
        if len(poly) < 6 or len(poly) % 2:
            raise ValueError(f"polygon {i} needs at least 3 (x, y) points, got {len(poly)} numbers")
    rles = mask_utils.frPyObjects(polygons, int(height), int(width))
    rle = mask_utils.merge(rles)
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_from_png(path_or_bytes: str | bytes | io.IOBase, threshold: int = 127) -> np.ndarray:
    """Read a binary mask PNG (0/255, any mode) as a bool ``(H, W)`` array: pixel > ``threshold``.

    Raises ``ValueError`` naming the file when it cannot be read as an image.
    """
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    try:
        with Image.open(source) as img:
            img.load()
            if img.mode == "P":  # palette PNG: compare indices, as 0/1 palettes are common
                array = np.asarray(img)
                return array > (threshold if array.max() > 1 else 0)
            array = np.asarray(img.convert("L"))
    except Exception as err:  # PIL raises several types for unreadable files
        name = path_or_bytes if isinstance(path_or_bytes, str) else "<bytes>"
        raise ValueError(f"cannot read mask PNG {name}: {err}") from err
    return array > threshold
