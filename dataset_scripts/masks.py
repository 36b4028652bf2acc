"""COCO RLE mask helpers on pycocotools (no hand-written codec).

An RLE here is the dict pycocotools produces, with ``counts`` as ``str`` so that it fits the
``string`` column of :data:`dataset_scripts.features.MRES_FEATURES`.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Sequence

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils


def _counts_from_string(counts: bytes) -> np.ndarray:
    """The run lengths of a COCO compressed-RLE string (pycocotools' `rleFrString`, read only to validate it).

    Each run is LEB128-like: 5 payload bits per character (offset 48), bit 0x20 = more characters follow, bit 0x10
    of the last character = sign; from the fourth run on, a run is stored as the difference to the run two before.
    Vectorised with numpy: validation must not cost more than the decoding it protects.
    """
    codes = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return codes
    bad = np.flatnonzero((codes < 0) | (codes >= 64))
    if bad.size:
        raise ValueError(f"its counts string holds {chr(counts[bad[0]])!r}, not a COCO RLE character")
    ends = np.flatnonzero((codes & 0x20) == 0)  # the last character of every run
    if ends.size == 0 or ends[-1] != codes.size - 1:
        raise ValueError("its counts string ends in the middle of a run")
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > 12:  # 60 bits: more cannot be a pixel count, and would overflow int64
        raise ValueError("its counts string holds a run too long to be a pixel count")
    shifts = 5 * (np.arange(codes.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((codes & 0x1F) << shifts, starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    # Runs 3, 5, 7, ... add up from run 1; runs 4, 6, 8, ... from run 2 (pycocotools: x += cnts[m-2] for m > 2).
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values


def to_coco_rle(rle: Any, name: str = "mask") -> dict[str, Any]:
    """Validate a COCO RLE and return the dict pycocotools expects (counts as bytes, size as ints).

    Accepts compressed counts (``str`` or ``bytes``) and uncompressed ones (a list of run lengths, as COCO's
    ``iscrowd`` annotations have). The runs must be non-negative and add up to height × width: pycocotools
    does not check this, and a mismatched RLE (e.g. a 96×96 prediction labelled 120×160) makes its merge hang
    or its decoder return uninitialised memory. Raises ``ValueError`` naming ``name`` otherwise.
    """
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"{name} is not a COCO RLE dict with 'size' and 'counts': {rle!r:.200}")
    size = rle["size"]
    if (
        isinstance(size, (str, bytes))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
    ):
        raise ValueError(f"{name} has an invalid RLE 'size' {size!r}: expected [height, width] integers")
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"{name} has an empty RLE size {[height, width]}: a mask needs height and width > 0")
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii", errors="replace")
    if isinstance(counts, (bytes, bytearray)):
        try:
            runs = _counts_from_string(bytes(counts))
        except ValueError as error:
            raise ValueError(f"{name} is not a valid COCO RLE: {error}") from None
    else:
        runs = np.asarray([int(v) for v in counts], dtype=np.int64)
    if (runs < 0).any() or int(runs.sum()) != height * width:
        raise ValueError(
            f"{name} is not a valid COCO RLE: its runs add up to {int(runs.sum())} pixels (or are negative), but its size "
            f"{[height, width]} has {height * width}; was the mask resized without re-encoding?"
        )
    if isinstance(counts, (bytes, bytearray)):
        return {"size": [height, width], "counts": bytes(counts)}
    return mask_utils.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)


def encode_mask(mask: Any, name: str = "mask") -> dict[str, Any]:
    """Encode a mask as COCO compressed RLE ``{"size": [h, w], "counts": str}`` (str: JSON and Arrow friendly).

    Accepts a bool ``(H, W)`` array, a 0/1 integer array or torch tensor, or any COCO RLE dict (validated by
    :func:`to_coco_rle`, returned in the compressed form); refuses anything that would need a threshold.
    """
    if isinstance(mask, Mapping):
        rle = to_coco_rle(mask, name)
        return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    if type(mask).__module__.startswith("torch"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (height, width) mask, got shape {mask.shape}")
    if mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"{name} has an empty shape {mask.shape}: a mask needs height and width > 0")
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer) or (mask.size and (mask.min() < 0 or mask.max() > 1)):
            raise ValueError(f"{name} has dtype {mask.dtype} with values beyond 0/1: pass a boolean mask")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8, copy=False)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(rle: dict[str, Any], name: str = "mask") -> np.ndarray:
    """Decode a COCO RLE (compressed str/bytes counts or uncompressed list) to a bool ``(H, W)`` array."""
    return mask_utils.decode(to_coco_rle(rle, name)).astype(bool)


def mask_area(rle: dict[str, Any]) -> int:
    """Number of foreground pixels, computed on the RLE without decoding."""
    return int(mask_utils.area(to_coco_rle(rle)))


def mask_intersection(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The COCO RLE of the pixels two masks of one image share."""
    if list(a["size"]) != list(b["size"]):
        raise ValueError(f"masks of different sizes {list(a['size'])} and {list(b['size'])} cannot intersect")
    return to_coco_rle(mask_utils.merge([to_coco_rle(a), to_coco_rle(b)], intersect=True))


def mask_bbox(rle: dict[str, Any]) -> list[float]:
    """Tight ``[x, y, w, h]`` box of the foreground in pixels (all zeros for an empty mask)."""
    return [float(v) for v in mask_utils.toBbox(to_coco_rle(rle))]


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
    """Read a binary mask PNG as a bool ``(H, W)`` array.

    A mask whose values are all 0 or 1 (a 0/1 grayscale or palette PNG) is its nonzero pixels;
    any other (0/255, 16-bit 0/65535, RGB) is pixel > ``threshold``. Palette PNGs are read by
    index, grayscale ones at their own bit depth, other modes as 8-bit grayscale.
    Raises ``ValueError`` naming the file when it cannot be read as an image.
    """
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, (bytes, bytearray)) else path_or_bytes
    try:
        with Image.open(source) as img:
            img.load()
            array = np.asarray(img if img.mode in ("1", "L", "P", "I", "I;16") else img.convert("L"))
    except Exception as err:  # PIL raises several types for unreadable files
        name = path_or_bytes if isinstance(path_or_bytes, str) else "<bytes>"
        raise ValueError(f"cannot read mask PNG {name}: {err}") from err
    # a 0/1 mask would be all background under a 0/255 threshold
    return array > (threshold if array.size and array.max() > 1 else 0)
