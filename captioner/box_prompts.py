"""Boxes as prompts: pixel boxes in each base model family's own box syntax, and one prompt per granularity.

The paper writes a box as ``(x1,y1),(x2,y2)`` with integers in [0, 999] relative to the image; the
whole image is (0,0),(999,999).  Qwen-VL models were trained on their own grounding forms, so a
fine-tune starts from what the base already knows when the prompt uses that form (``BoxFormat``,
chosen from the model's config by :func:`box_format_for`):

- Qwen3-VL: JSON ``{"bbox_2d": [x1, y1, x2, y2]}`` relative to the image on a 0-1000 scale;
- Qwen2-VL: ``(x1,y1),(x2,y2)`` on a 0-1000 scale;
- Qwen2.5-VL: JSON ``{"bbox_2d": [...]}`` in absolute pixels of the image *as resized by the processor*;
- any other family: the paper's ``(x1,y1),(x2,y2)`` in [0, 999].

A coordinate ``x`` of an image ``W`` pixels wide becomes ``round(x / W * scale)``; a box never
collapses to zero size (a side that rounds to nothing is widened by one step).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Sequence

CAPTION_GRANULARITIES = ("image", "object", "part")
NORMALIZED_MAX = 999

#: Prompt per granularity; ``{box}`` is replaced by the box in the model family's format.
PROMPT_TEMPLATES = {
    "image": "Describe the whole image {box} in one sentence.",
    "object": "Describe the object in the region {box} with a short referring expression.",
    "part": "Name the object part in the region {box} as '<part> of <object>'.",
}


@dataclass(frozen=True)
class BoxFormat:
    """How a box is written in a prompt.

    Args:
        name: a label (shown in the model card).
        style: ``"pairs"`` writes ``(x1,y1),(x2,y2)``; ``"json"`` writes ``{"bbox_2d": [x1, y1, x2, y2]}``.
        scale: coordinates are integers in [0, scale] relative to the image; ``None`` means absolute
            pixels of the image as resized by the processor (Qwen2.5-VL).
    """

    name: str
    style: str
    scale: int | None

    def __post_init__(self):
        if self.style not in ("pairs", "json"):
            raise ValueError(f"Unknown box style {self.style!r}; expected 'pairs' or 'json'.")


PAPER_BOX_FORMAT = BoxFormat("paper (x1,y1),(x2,y2) in [0, 999]", "pairs", NORMALIZED_MAX)
QWEN2_VL_BOX_FORMAT = BoxFormat("Qwen2-VL (x1,y1),(x2,y2) in [0, 1000]", "pairs", 1000)
QWEN2_5_VL_BOX_FORMAT = BoxFormat("Qwen2.5-VL bbox_2d in resized-image pixels", "json", None)
QWEN3_VL_BOX_FORMAT = BoxFormat("Qwen3-VL bbox_2d in [0, 1000]", "json", 1000)

#: ``config.model_type`` → the box syntax that family was trained on.
BOX_FORMATS = {
    "qwen2_vl": QWEN2_VL_BOX_FORMAT,
    "qwen2_5_vl": QWEN2_5_VL_BOX_FORMAT,
    "qwen3_vl": QWEN3_VL_BOX_FORMAT,
    "qwen3_vl_moe": QWEN3_VL_BOX_FORMAT,
}


def box_format_for(model_or_config) -> BoxFormat:
    """The native box format of a model (or its config), by ``model_type``; the paper's otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    return BOX_FORMATS.get(getattr(config, "model_type", None), PAPER_BOX_FORMAT)


def _label(item) -> str:
    return f" (item {item!r})" if item is not None else ""


def validate_box(box: Sequence[float], item=None) -> tuple[float, float, float, float]:
    """Check an ``[x, y, w, h]`` pixel box: four finite numbers, positive width and height.

    Raises:
        ValueError: naming ``item`` (and the box) when the box is malformed, NaN/inf or empty.
    """
    if len(box) != 4:
        raise ValueError(f"Box {list(box)!r}{_label(item)} must have 4 numbers [x, y, w, h].")
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError(f"Box {list(box)!r}{_label(item)} has a NaN or infinite coordinate.")
    if w <= 0 or h <= 0:
        raise ValueError(f"Box {list(box)!r}{_label(item)} has zero or negative size (w={w}, h={h}).")
    return x, y, w, h


def clip_box(box: Sequence[float], image_size: tuple[int, int], item=None) -> tuple[float, float, float, float]:
    """Clip an ``[x, y, w, h]`` pixel box to an image of ``(width, height)``.

    Raises:
        ValueError: when the box is invalid or lies entirely outside the image.
    """
    x, y, w, h = validate_box(box, item)
    width, height = image_size
    if width <= 0 or height <= 0:
        raise ValueError(f"Image size {image_size!r}{_label(item)} must be positive.")
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"Box {list(box)!r}{_label(item)} lies outside the {width}x{height} image.")
    return x1, y1, x2 - x1, y2 - y1


def _scale_span(low: float, high: float, side: float, scale: int) -> tuple[int, int]:
    """``[low, high]`` pixels of a ``side``-pixel axis → integers in [0, scale], at least one step apart."""
    a = int(min(max(round(low / side * scale), 0), scale))
    b = int(min(max(round(high / side * scale), 0), scale))
    if b <= a:  # a box thinner than half a step would round to zero size
        a, b = (a, a + 1) if a < scale else (scale - 1, scale)
    return a, b


def normalize_box(box: Sequence[float], image_size: tuple[int, int], item=None, scale: int = NORMALIZED_MAX) -> tuple[int, int, int, int]:
    """``[x, y, w, h]`` pixels → ``(x1, y1, x2, y2)`` integers in [0, scale], clipped to the image,
    with ``x2 > x1`` and ``y2 > y1`` however small the box."""
    x, y, w, h = clip_box(box, image_size, item)
    width, height = image_size
    x1, x2 = _scale_span(x, x + w, width, scale)
    y1, y2 = _scale_span(y, y + h, height, scale)
    return x1, y1, x2, y2


def box_coordinates(box: Sequence[float], image_size: tuple[int, int], box_format: BoxFormat = PAPER_BOX_FORMAT,
                    resized_size: tuple[int, int] | None = None, item=None) -> tuple[int, int, int, int]:
    """The four integers ``box_format`` writes for an ``[x, y, w, h]`` pixel box of an image of ``image_size``.

    For a format in absolute pixels of the resized image (``scale=None``), ``resized_size`` is the
    ``(width, height)`` the processor resizes the image to.
    """
    if box_format.scale is not None:
        return normalize_box(box, image_size, item, box_format.scale)
    if resized_size is None:
        raise ValueError(f"{box_format.name} needs the resized image size{_label(item)}.")
    x, y, w, h = clip_box(box, image_size, item)
    (width, height), (resized_width, resized_height) = image_size, resized_size
    x1, x2 = _scale_span(x / width * resized_width, (x + w) / width * resized_width, resized_width, resized_width)
    y1, y2 = _scale_span(y / height * resized_height, (y + h) / height * resized_height, resized_height, resized_height)
    return x1, y1, x2, y2


def denormalize_box(box: Sequence[int], image_size: tuple[int, int], scale: int = NORMALIZED_MAX) -> tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` in [0, scale] → ``[x, y, w, h]`` pixels."""
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = x1 / scale * width, x2 / scale * width
    y1, y2 = y1 / scale * height, y2 / scale * height
    return x1, y1, x2 - x1, y2 - y1


def format_box(coordinates: Sequence[int], box_format: BoxFormat = PAPER_BOX_FORMAT) -> str:
    """The textual box: ``(x1,y1),(x2,y2)`` or ``{"bbox_2d": [x1, y1, x2, y2]}``."""
    x1, y1, x2, y2 = (int(v) for v in coordinates)
    if box_format.style == "json":
        return json.dumps({"bbox_2d": [x1, y1, x2, y2]})
    return f"({x1},{y1}),({x2},{y2})"


def build_prompt(granularity: str, coordinates: Sequence[int], templates: dict | None = None,
                 box_format: BoxFormat = PAPER_BOX_FORMAT) -> str:
    """The user instruction for one box at one granularity (before the chat template)."""
    templates = templates or PROMPT_TEMPLATES
    if granularity not in templates:
        raise ValueError(f"Unknown granularity {granularity!r}; expected one of {sorted(templates)}.")
    return templates[granularity].format(box=format_box(coordinates, box_format))


def build_messages(prompt: str, answer: str | None = None) -> list[dict]:
    """Chat messages for one image and one instruction (plus the answer when training)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
