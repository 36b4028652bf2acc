"""Procedural scenes: objects made of named parts, rasterised with exact part masks.

Everything is drawn from a ``numpy.random.Generator``; the same seed gives the same scene, byte
for byte. Objects never overlap (a 2-pixel gap separates their boxes), so every mask is the
exact set of pixels of that object or part as drawn; a part drawn over another (a window on a
body) takes its pixels from the one below.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .vocabulary import CATEGORIES, CATEGORY_NAMES, COLOUR_NAMES, COLOURS, SIZES, held_out_combinations

_GAP = 2  # pixels between object boxes
_PLACEMENT_TRIES = 60


@dataclass
class SceneObject:
    """One object of a scene, with its attributes and exact masks."""

    index: int
    category: str
    colour: str
    size: str  # "small" | "large"
    box: tuple[int, int, int, int]  # x, y, w, h in pixels
    mask: np.ndarray = field(repr=False)
    part_masks: dict[str, np.ndarray] = field(repr=False)  # part name -> union of its instances
    part_counts: dict[str, int] = field(default_factory=dict)

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    objects: list[SceneObject]

    @property
    def size(self) -> int:
        return self.image.shape[0]


def _shape_mask(shape: tuple, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    """Boolean mask of one shape on the object's unit-box coordinates ``u`` (x) and ``v`` (y)."""
    kind = shape[0]
    if kind == "rect":
        _, x0, y0, x1, y1 = shape
        return (u >= x0) & (u < x1) & (v >= y0) & (v < y1)
    if kind in ("ellipse", "half_ellipse"):
        _, cx, cy, rx, ry = shape
        inside = ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1.0
        return inside & (v <= cy) if kind == "half_ellipse" else inside
    if kind == "circle":  # radius in units of the object's height, so it stays round
        _, cx, cy, r = shape
        return ((u - cx) * aspect) ** 2 + (v - cy) ** 2 <= r * r
    if kind == "poly":  # convex polygon: inside every edge's half-plane (either winding)
        pts = shape[1]
        signs = []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:] + pts[:1]):
            signs.append((x1 - x0) * (v - y0) - (y1 - y0) * (u - x0))
        stacked = np.stack(signs)
        return np.all(stacked >= 0, axis=0) | np.all(stacked <= 0, axis=0)
    raise ValueError(f"unknown shape kind {kind!r}")


def _part_colour(rule, colour: tuple[int, int, int]) -> np.ndarray:
    if rule == "object":
        return np.asarray(colour, dtype=np.float32)
    if rule == "dark":
        return np.asarray(colour, dtype=np.float32) * 0.55
    return np.asarray(rule, dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A pale vertical gradient with a soft random tint: plain enough not to look like an object."""
    top = np.array([205, 222, 238], np.float32) + rng.uniform(-12, 12, 3)
    bottom = np.array([232, 228, 212], np.float32) + rng.uniform(-12, 12, 3)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()


def _choose_attributes(rng, previous, allowed, distractor_prob):
    """Pick (category, colour) for the next object, often sharing category or colour with an earlier one."""
    if previous and rng.random() < distractor_prob:
        anchor = previous[rng.integers(len(previous))]
        if rng.random() < 0.5:  # same category, other colour (or the same colour: sizes/position then decide)
            options = [c for c in allowed if c[0] == anchor[0]]
        else:  # same colour, other category
            options = [c for c in allowed if c[1] == anchor[1] and c[0] != anchor[0]]
        if options:
            return options[rng.integers(len(options))]
    return allowed[rng.integers(len(allowed))]


def _place(rng, size: int, w: int, h: int, boxes) -> tuple[int, int] | None:
    for _ in range(_PLACEMENT_TRIES):
        x = int(rng.integers(1, size - w))
        y = int(rng.integers(1, size - h))
        if all(
            x + w + _GAP <= bx or bx + bw + _GAP <= x or y + h + _GAP <= by or by + bh + _GAP <= y
            for bx, by, bw, bh in boxes
        ):
            return x, y
    return None


def generate_scene(
    rng: np.random.Generator | int,
    image_size: int = 96,
    *,
    min_objects: int = 2,
    max_objects: int = 5,
    combinations: str = "seen",
    distractor_prob: float = 0.8,
    noise: float = 0.0,
) -> Scene:
    """Draw one scene.

    Args:
        rng: a numpy ``Generator`` or an int seed.
        image_size: side of the square image in pixels.
        min_objects, max_objects: number of objects (fewer than drawn only when placement fails,
            never fewer than ``min_objects`` unless the image is too small for them).
        combinations: ``"seen"`` draws category–colour pairs outside the held-out set,
            ``"unseen"`` draws only held-out pairs (the ``test_unseen`` and ``train_unseen`` splits).
        distractor_prob: probability that an object shares category or colour with an earlier one.
        noise: standard deviation of optional pixel noise, in grey levels (0: flat colours, small PNGs).
    """
    if isinstance(rng, (int, np.integer)):
        rng = np.random.default_rng(int(rng))
    if combinations not in ("seen", "unseen"):
        raise ValueError(f"combinations must be 'seen' or 'unseen', got {combinations!r}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    held = held_out_combinations()
    allowed = [
        (c, k) for c in CATEGORY_NAMES for k in COLOUR_NAMES if ((c, k) in held) == (combinations == "unseen")
    ]
    image = _background(rng, image_size)
    labels = np.zeros((image_size, image_size), np.int16)  # 0 background, else 1 + global part index
    n = int(rng.integers(min_objects, max_objects + 1))
    chosen: list[tuple[str, str]] = []
    boxes: list[tuple[int, int, int, int]] = []
    objects: list[SceneObject] = []
    part_ids: list[tuple[int, str]] = []
    for i in range(n):
        category, colour = _choose_attributes(rng, chosen, allowed, distractor_prob)
        cat = CATEGORIES[category]
        # objects that must exist (i < min_objects) fall back to the small size when crowded
        for size_name in ([("small", "large")[int(rng.integers(2))]] + (["small"] if i < min_objects else [])):
            lo, hi = SIZES[size_name]
            side = rng.uniform(lo, hi) * image_size
            w = max(4, int(round(side * np.sqrt(cat.aspect))))
            h = max(4, int(round(side / np.sqrt(cat.aspect))))
            if w >= image_size - 2 or h >= image_size - 2:
                continue
            pos = _place(rng, image_size, w, h, boxes)
            if pos is not None:
                break
        else:
            continue
        x, y = pos
        chosen.append((category, colour))
        boxes.append((x, y, w, h))
        # unit coordinates of pixel centres inside the object's box
        v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
        region_img = image[y : y + h, x : x + w]
        region_lab = labels[y : y + h, x : x + w]
        counts = {}
        for part in cat.parts:
            m = np.zeros((h, w), bool)
            for shape in part.shapes:
                m |= _shape_mask(shape, u, v, cat.aspect)
            part_ids.append((len(objects), part.name))
            region_lab[m] = len(part_ids)
            region_img[m] = _part_colour(part.colour, COLOURS[colour])
            counts[part.name] = len(part.shapes)
        objects.append(
            SceneObject(len(objects), category, colour, size_name, (x, y, w, h), None, {}, counts)
        )
    for pid, (obj_index, part_name) in enumerate(part_ids, start=1):
        objects[obj_index].part_masks[part_name] = labels == pid
    for obj in objects:
        obj.mask = np.logical_or.reduce(list(obj.part_masks.values()))
    if noise > 0:
        image += rng.normal(0.0, noise, image.shape).astype(np.float32)
    return Scene(np.clip(np.rint(image), 0, 255).astype(np.uint8), objects)
