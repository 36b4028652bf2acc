"""Boxes as prompts: pixel boxes to integers in [0, 999] and one prompt template per granularity.

The whole image is the box (0,0),(999,999).  A coordinate ``x`` of an image ``W`` pixels wide
becomes ``round(x / W * 999)``; going back gives ``n / 999 * W``, so a round trip is exact to
within half a step, i.e. well under a thousandth of the side.
"""
from __future__ import annotations

import math
from typing import Sequence

CAPTION_GRANULARITIES = ("image", "object", "part")
NORMALIZED_MAX = 999

#: Prompt per granularity; ``{box}`` is replaced by ``(x1,y1),(x2,y2)`` in [0, 999].
PROMPT_TEMPLATES = {
    "image": "Describe the whole image {box} in one sentence.",
    "object": "Describe the object in the region {box} with a short referring expression.",
    "part": "Name the object part in the region {box} as '<part> of <object>'.",
}


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


def normalize_box(box: Sequence[float], image_size: tuple[int, int], item=None) -> tuple[int, int, int, int]:
    """``[x, y, w, h]`` pixels → ``(x1, y1, x2, y2)`` integers in [0, 999], clipped to the image."""
    x, y, w, h = clip_box(box, image_size, item)
    width, height = image_size

    def scale(value: float, side: int) -> int:
        return int(min(max(round(value / side * NORMALIZED_MAX), 0), NORMALIZED_MAX))

    return scale(x, width), scale(y, height), scale(x + w, width), scale(y + h, height)


def denormalize_box(box: Sequence[int], image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """``(x1, y1, x2, y2)`` in [0, 999] → ``[x, y, w, h]`` pixels."""
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, x2 = x1 / NORMALIZED_MAX * width, x2 / NORMALIZED_MAX * width
    y1, y2 = y1 / NORMALIZED_MAX * height, y2 / NORMALIZED_MAX * height
    return x1, y1, x2 - x1, y2 - y1


def format_box(normalized_box: Sequence[int]) -> str:
    """The paper's textual box: ``(x1,y1),(x2,y2)``."""
    x1, y1, x2, y2 = (int(v) for v in normalized_box)
    return f"({x1},{y1}),({x2},{y2})"


def build_prompt(granularity: str, normalized_box: Sequence[int], templates: dict | None = None) -> str:
    """The user instruction for one box at one granularity (before the chat template)."""
    templates = templates or PROMPT_TEMPLATES
    if granularity not in templates:
        raise ValueError(f"Unknown granularity {granularity!r}; expected one of {sorted(templates)}.")
    return templates[granularity].format(box=format_box(normalized_box))


def build_messages(prompt: str, answer: str | None = None) -> list[dict]:
    """Chat messages for one image and one instruction (plus the answer when training)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages
