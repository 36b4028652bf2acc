"""What MRES-Synth scenes are made of: categories drawn from named parts, colours, sizes.

Geometry is given in the unit box of the object (x right, y down, both in [0, 1]); a circle's
radius is a fraction of the object's height so wheels stay round whatever the aspect ratio.
Shapes are simple and convex (rectangles, ellipses and their upper halves, circles, triangles,
trapezoids) so that
parts are crisp and learnable at 96 x 96 pixels. Several categories share part names (wheel:
car, bus, truck; window: house, car, bus; roof: house, car), which is what makes "the wheels of
the blue bus" a fine-grained task rather than a category lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

# name -> RGB of the object's main part. Chosen far from the fixed part colours below
# (dark wheels, pale-blue windows, brown doors/trunks, white sails) and from the pale background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 215),
    "yellow": (240, 205, 30),
    "orange": (245, 135, 25),
    "purple": (135, 55, 185),
    "pink": (240, 115, 185),
    "teal": (0, 140, 140),
}

# Fixed colours of parts that do not take the object's colour.
WHEEL = (35, 35, 40)
GLASS = (165, 215, 250)
WOOD = (110, 70, 35)
SAIL = (248, 248, 240)
SKIN = (235, 195, 155)
CREAM = (235, 225, 200)
DARK_CLOTH = (55, 55, 80)

SIZES = {"small": (0.20, 0.25), "large": (0.32, 0.38)}  # sqrt(w*h) as a fraction of the image side
SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}


@dataclass(frozen=True)
class Part:
    """A named part: one or more convex shapes, drawn in the order parts are listed.

    ``colour`` is an RGB triple, ``"object"`` (the object's colour) or ``"dark"`` (the object's
    colour darkened), so that parts differ from their neighbours.
    ``plural`` is the name used for several instances ("wheels"); None when there is one.
    """

    name: str
    shapes: tuple
    colour: object
    plural: str | None = None


@dataclass(frozen=True)
class Category:
    name: str
    aspect: float  # width / height
    parts: tuple[Part, ...]

    @property
    def part_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.parts)


def _wheels(xs, cy, r):
    return Part("wheel", tuple(("circle", x, cy, r) for x in xs), WHEEL, plural="wheels")


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in (
        Category("car", 1.7, (
            Part("roof", (("poly", ((0.20, 0.45), (0.32, 0.05), (0.72, 0.05), (0.84, 0.45))),), "dark"),
            Part("body", (("rect", 0.0, 0.42, 1.0, 0.82),), "object"),
            Part("window", (("rect", 0.33, 0.15, 0.49, 0.40), ("rect", 0.55, 0.15, 0.71, 0.40)), GLASS,
                 plural="windows"),
            _wheels((0.22, 0.78), 0.80, 0.20),
        )),
        Category("bus", 1.8, (
            Part("body", (("rect", 0.0, 0.0, 1.0, 0.84),), "object"),
            Part("window", tuple(("rect", x, 0.12, x + 0.15, 0.42) for x in (0.25, 0.45, 0.65)), GLASS,
                 plural="windows"),
            Part("door", (("rect", 0.05, 0.14, 0.19, 0.80),), "dark"),
            _wheels((0.24, 0.78), 0.82, 0.19),
        )),
        Category("truck", 1.9, (
            Part("cargo box", (("rect", 0.0, 0.0, 0.64, 0.78),), "object"),
            Part("cab", (("poly", ((0.67, 0.25), (0.88, 0.25), (1.0, 0.50), (1.0, 0.78), (0.67, 0.78))),), "dark"),
            _wheels((0.15, 0.45, 0.84), 0.80, 0.20),
        )),
        Category("house", 0.9, (
            Part("roof", (("poly", ((0.0, 0.46), (0.5, 0.0), (1.0, 0.46))),), "dark"),
            Part("wall", (("rect", 0.08, 0.46, 0.92, 1.0),), "object", plural=None),
            Part("window", (("rect", 0.16, 0.55, 0.38, 0.76), ("rect", 0.62, 0.55, 0.84, 0.76)), GLASS,
                 plural="windows"),
            Part("door", (("rect", 0.41, 0.64, 0.59, 1.0),), WOOD),
        )),
        Category("tree", 0.8, (
            Part("trunk", (("rect", 0.38, 0.55, 0.62, 1.0),), WOOD),
            Part("crown", (("ellipse", 0.5, 0.34, 0.5, 0.34),), "object"),
        )),
        Category("boat", 1.3, (
            Part("hull", (("poly", ((0.0, 0.64), (1.0, 0.64), (0.82, 1.0), (0.18, 1.0))),), "object"),
            Part("sail", (("poly", ((0.52, 0.02), (0.52, 0.60), (0.92, 0.60))),
                          ("poly", ((0.46, 0.12), (0.46, 0.60), (0.12, 0.60)))), SAIL, plural="sails"),
        )),
        Category("person", 0.55, (
            Part("head", (("circle", 0.5, 0.13, 0.13),), SKIN),
            Part("torso", (("rect", 0.12, 0.27, 0.88, 0.62),), "object"),
            Part("leg", (("rect", 0.18, 0.62, 0.46, 1.0), ("rect", 0.54, 0.62, 0.82, 1.0)), DARK_CLOTH,
                 plural="legs"),
        )),
        Category("mushroom", 1.1, (
            Part("stem", (("rect", 0.33, 0.45, 0.67, 1.0),), CREAM),
            Part("cap", (("half_ellipse", 0.5, 0.45, 0.5, 0.45),), "object"),
        )),
    )
}

CATEGORY_NAMES = tuple(CATEGORIES)
COLOUR_NAMES = tuple(COLOURS)
PART_NAMES = tuple(sorted({p.name for c in CATEGORIES.values() for p in c.parts}))
PLURALS = {p.name: p.plural for c in CATEGORIES.values() for p in c.parts if p.plural}


def held_out_combinations() -> frozenset[tuple[str, str]]:
    """Category–colour pairs reserved for ``test_unseen`` and ``train_unseen`` (never drawn in train/validation/test).

    Category ``i`` holds out colours ``i`` and ``i + 3`` (mod 8): every colour is held out for
    exactly two categories and seen with all the others, so ``test_unseen`` tests composition,
    not new words.
    """
    pairs = set()
    n = len(COLOUR_NAMES)
    for i, cat in enumerate(CATEGORY_NAMES):
        for k in (0, 3):
            pairs.add((cat, COLOUR_NAMES[(i + k) % n]))
    return frozenset(pairs)
