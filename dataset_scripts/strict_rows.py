"""What the strict builders share: an error that names file, item and key; masks read from any encoding; publishing.

The builders of users' own data (:mod:`~dataset_scripts.own_data`) and of the part and reasoning benchmarks
(:mod:`~dataset_scripts.instructpart`, :mod:`~dataset_scripts.groundingsuite`, :mod:`~dataset_scripts.reasonseg`)
refuse a bad row instead of skipping it: a benchmark with a row quietly left out gives a figure no paper can be
compared with, and a user's own folder is best fixed where it is wrong. Every refusal is a :class:`RowError`
whose one-line message reads ``{file}, {item}, key '{key}': {problem}``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Mapping, Optional

from PIL import Image

from .coco_common import read_image
from .masks import encode_mask, mask_area, mask_from_png, mask_from_polygons


class RowError(ValueError):
    """A row the builder refuses: ``{file}, {item}, key '{key}': {problem}``.

    Args:
        path: the annotation file.
        item: where in it, e.g. ``"line 3"`` or ``"annotations[5] (id 12)"``.
        key: the offending key, dotted for nested ones (``"referents[1].mask"``).
        problem: what is wrong, in a few words.
    """

    def __init__(self, path: str, item: str, key: str, problem: str):
        self.path, self.item, self.key, self.problem = path, item, key, problem
        super().__init__(f"{path}, {item}, key '{key}': {problem}")


def jsonl_records(path: str):
    """Yield ``(line number, record)`` for every non-blank line of a JSONL file; a line that is not valid JSON raises
    :class:`RowError` naming the file and the line."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise RowError(path, f"line {number}", "(json)", f"not valid JSON: {err}") from err


def read_image_at(path: str, where: tuple[str, str, str]) -> tuple[bytes, int, int]:
    """Bytes, width and height of the image at ``path`` (:func:`coco_common.read_image`, decoded in full); a
    :class:`RowError` at ``where`` if missing or unreadable.

    Width and height are the image's as shown, after its EXIF orientation: the size the model sees (the one
    image→RGB rule turns the pixels) and the one annotation tools draw on (labelme, CVAT, OpenCV's ``imread`` in
    LISA's loader all turn the image first), so a mask is checked against, and scored at, that size.
    """
    if not os.path.isfile(path):
        raise RowError(*where, f"image not found: {path}")
    try:
        data, width, height = read_image(path)
    except ValueError as err:  # "unreadable image <path>: <PIL's reason>"
        raise RowError(*where, str(err)) from err
    return (data, height, width) if _turned_sideways(data) else (data, width, height)


def _turned_sideways(data: bytes) -> bool:
    """Whether the image's EXIF orientation (5 to 8) turns it by 90 degrees."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # an unreadable EXIF block leaves the image as stored (as PIL's exif_transpose does)
        return False


def mask_from_any(spec: Any, height: int, width: int, base_dir: str, where: tuple[str, str, str]) -> dict:
    """A COCO RLE of size ``(height, width)`` from a PNG path, a COCO RLE dict or COCO polygons.

    - a string: a mask PNG relative to ``base_dir`` (0/255 or 0/1), which must be image-sized;
    - a dict ``{size: [h, w], counts}``: COCO RLE (compressed string or uncompressed list), ``size`` the image's;
    - a list of ``[x0, y0, x1, y1, ...]`` lists: COCO polygons in pixels, rasterised by pycocotools.

    Refuses (``RowError`` at ``where``) an unreadable or wrongly sized mask, and an empty one.
    """
    if isinstance(spec, str):
        path = spec if os.path.isabs(spec) else os.path.join(base_dir, spec)
        if not os.path.isfile(path):
            raise RowError(*where, f"mask PNG not found: {path}")
        try:
            array = mask_from_png(path)
        except ValueError as err:
            raise RowError(*where, str(err)) from err
        if array.ndim != 2 or array.shape != (height, width):
            raise RowError(*where, f"mask {path} is {'x'.join(map(str, array.shape))} (h x w), the image {height}x{width}")
        rle = encode_mask(array)
    elif isinstance(spec, Mapping):
        try:
            rle = encode_mask(spec, name="the RLE")
        except ValueError as err:
            raise RowError(*where, str(err)) from err
        if list(rle["size"]) != [height, width]:
            raise RowError(*where, f"RLE size {list(rle['size'])} is not the image's [height, width] {[height, width]}")
    elif isinstance(spec, list) and spec and all(isinstance(p, list) for p in spec):
        try:
            rle = mask_from_polygons(spec, height, width)
        except (ValueError, TypeError) as err:
            raise RowError(*where, f"bad polygons: {err}") from err
    else:
        raise RowError(*where, "expected a PNG path, a COCO RLE {size, counts} or polygons [[x, y, ...], ...], "
                               f"got {type(spec).__name__}: {spec!r:.80}")
    if mask_area(rle) == 0:
        raise RowError(*where, "the mask is empty (no foreground pixel)")
    return rle


def check_sentences(raw: Any, where: tuple[str, str, str]) -> list[str]:
    """A non-empty list of non-blank strings, stripped; :class:`RowError` at ``where`` otherwise."""
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)) or not raw:
        raise RowError(*where, f"expected a non-empty list of sentences, got {raw!r:.80}")
    bad = [i for i, s in enumerate(raw) if not isinstance(s, str) or not s.strip()]
    if bad:
        raise RowError(*where, f"sentences {bad} are blank or not strings")
    return [s.strip() for s in raw]


def conventions_markdown(conventions: Mapping[str, Any]) -> str:
    """A benchmark's ``METRIC_CONVENTIONS`` as a Markdown list, for its dataset card and the evaluation report."""
    lines = []
    for key, value in conventions.items():
        if isinstance(value, Mapping):
            lines.append(f"- {key}:")
            lines += [f"  - {name}: {text}" for name, text in value.items()]
        else:
            lines.append(f"- {key}: {value}")
    return "\n".join(lines)


def prepare(builder) -> None:
    """``builder.download_and_prepare``, reading the inputs again (the cache is keyed on the config, not on the
    files: a repaired row is seen). A bad row raises the builder's own error (a :class:`RowError` naming file, item
    and key), not the ``DatasetGenerationError`` that datasets wraps it in and that names neither."""
    from datasets.exceptions import DatasetGenerationError

    from run_support.cli import root_cause

    try:
        builder.download_and_prepare(download_mode="force_redownload")
    except DatasetGenerationError as error:
        cause = root_cause(error)
        if cause is not error and isinstance(cause, (ValueError, OSError)):
            raise cause from None  # its message names the file, the item and the key
        raise


def publish_built(builder, output_dir: Optional[str], card_data: Mapping[str, Any], *, max_shard_size="256MB",
                  **push) -> str:
    """Build (re-reading the inputs) and write ``output_dir`` in the Hub layout with ``card_data``; push with ``repo_id``."""
    from .publish import publish

    prepare(builder)
    return publish(builder.as_dataset(), output_dir, max_shard_size=max_shard_size, card_data=dict(card_data), **push)
