"""Referring expressions for MRES-Synth scenes, at object and part granularity, each unambiguous.

An expression is generated from a *descriptor* (category plus optional colour, size and
position, and for a part its name) and kept only when :func:`resolve` finds exactly the
intended referent in the scene. :func:`parse_expression` reads a sentence back into its
descriptor, so the unambiguity of every sentence in a dataset can be re-checked independently
of how it was generated (the tests do this).

Semantics:
- colour and size filter objects of the category;
- a position ("on the left", "at the top", ...) picks, among the objects left by the filters,
  the extreme one along that axis; it applies only when at least two objects remain and the
  extreme one leads the next by a clear margin (10% of the image side);
- a part expression ("the wheels of the blue bus") refers to ALL instances of that part on the
  object (the union of its wheels); "the wheels" alone is used only when a single object in the
  scene has wheels.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .scene import Scene, SceneObject
from .vocabulary import CATEGORIES, COLOURS, PLURALS, SIZE_WORDS

POSITION_MARGIN = 0.10  # fraction of the image side separating the extreme object from the next
_POSITION_SUFFIX = {"left": " on the left", "right": " on the right", "top": " at the top", "bottom": " at the bottom"}
_POSITION_PREFIX = {"left": "leftmost", "right": "rightmost", "top": "topmost", "bottom": "bottommost"}


@dataclass(frozen=True)
class Descriptor:
    category: Optional[str] = None  # None only for part-only expressions ("the wheels")
    colour: Optional[str] = None
    size: Optional[str] = None
    position: Optional[str] = None
    part: Optional[str] = None


def _extreme(candidates: list[SceneObject], position: str, image_size: int) -> list[SceneObject]:
    axis = 0 if position in ("left", "right") else 1
    sign = 1.0 if position in ("left", "top") else -1.0
    order = sorted(candidates, key=lambda o: sign * o.center[axis])
    gap = sign * (order[1].center[axis] - order[0].center[axis])
    return [order[0]] if gap >= POSITION_MARGIN * image_size else order


def resolve_objects(desc: Descriptor, scene: Scene) -> list[SceneObject]:
    """Objects of ``scene`` that the object part of ``desc`` designates (ambiguous if more than one)."""
    candidates = [
        o
        for o in scene.objects
        if (desc.category is None or o.category == desc.category)
        and (desc.colour is None or o.colour == desc.colour)
        and (desc.size is None or o.size == desc.size)
        and (desc.part is None or desc.part in o.part_masks)
    ]
    if desc.position is not None:
        if len(candidates) < 2:
            return []  # "the car on the left" needs another car to be left of
        candidates = _extreme(candidates, desc.position, scene.size)
    return candidates


def resolve(desc: Descriptor, scene: Scene) -> list[tuple[int, Optional[str]]]:
    """Referents ``(object index, part name or None)`` that ``desc`` designates in ``scene``."""
    return [(o.index, desc.part) for o in resolve_objects(desc, scene)]


# ----------------------------------------------------------------------------- generation


def _part_phrase(obj: SceneObject, part: str) -> str:
    return PLURALS[part] if obj.part_counts.get(part, 1) > 1 and part in PLURALS else part


def _object_phrases(desc: Descriptor, rng: np.random.Generator) -> list[str]:
    """Surface forms of an object descriptor, without article ("red car on the left", ...)."""
    size = None if desc.size is None else SIZE_WORDS[desc.size][int(rng.integers(2))]
    words = " ".join(w for w in (size, desc.colour, desc.category) if w)
    if desc.position is None:
        forms = [words]
        if desc.colour and not desc.size:
            forms.append(f"{desc.category} that is {desc.colour}")
        return forms
    return [words + _POSITION_SUFFIX[desc.position], f"{_POSITION_PREFIX[desc.position]} {words}"]


def object_descriptors(obj: SceneObject, scene: Scene) -> list[Descriptor]:
    """Every descriptor of ``obj`` (category with optional colour, size, position) that is unambiguous."""
    found = []
    positions = [None, "left", "right", "top", "bottom"]
    for colour, size, position in itertools.product((None, obj.colour), (None, obj.size), positions):
        desc = Descriptor(obj.category, colour, size, position)
        if resolve_objects(desc, scene) == [obj]:
            found.append(desc)
    return found


def _simplest_first(descs: list[Descriptor]) -> list[Descriptor]:
    return sorted(descs, key=lambda d: sum(x is not None for x in (d.colour, d.size, d.position)))


def object_sentences(
    obj: SceneObject,
    scene: Scene,
    rng: np.random.Generator,
    max_sentences: int = 3,
    descriptors: Optional[list[Descriptor]] = None,
) -> list[str]:
    """1 to ``max_sentences`` distinct unambiguous sentences for ``obj`` (empty if none exists).

    ``descriptors`` (from :func:`object_descriptors`) may be passed to avoid recomputing them.
    """
    descs = descriptors if descriptors is not None else object_descriptors(obj, scene)
    descs = _simplest_first(descs)[:4]
    pool = sorted({f"the {p}" for d in descs for p in _object_phrases(d, rng)})
    return _pick(pool, rng, max_sentences)


def part_sentences(
    obj: SceneObject,
    part: str,
    scene: Scene,
    rng: np.random.Generator,
    max_sentences: int = 3,
    descriptors: Optional[list[Descriptor]] = None,
) -> list[str]:
    """1 to ``max_sentences`` distinct unambiguous sentences for the part ``part`` of ``obj``."""
    name = _part_phrase(obj, part)
    pool = set()
    descs = descriptors if descriptors is not None else object_descriptors(obj, scene)
    for desc in _simplest_first(descs)[:4]:
        for phrase in _object_phrases(desc, rng):
            pool.add(f"the {name} of the {phrase}")
            # the possessive reads badly after a trailing position or a relative clause
            if not (desc.position or " that is " in phrase):
                pool.add(f"the {phrase}'s {name}")
    if resolve(Descriptor(part=part), scene) == [(obj.index, part)]:
        pool.add(f"the {name}")
    return _pick(sorted(pool), rng, max_sentences)


def _pick(pool: list[str], rng: np.random.Generator, max_sentences: int) -> list[str]:
    if not pool:
        return []
    k = int(rng.integers(1, min(max_sentences, len(pool)) + 1))
    return [pool[i] for i in sorted(rng.choice(len(pool), size=k, replace=False))]


# ----------------------------------------------------------------------------- parsing

_SIZE_LOOKUP = {w: s for s, words in SIZE_WORDS.items() for w in words}
_PART_LOOKUP = {**{p: p for c in CATEGORIES.values() for p in c.part_names}, **{pl: p for p, pl in PLURALS.items()}}


def _parse_object(text: str) -> Descriptor:
    position = None
    for pos, suffix in _POSITION_SUFFIX.items():
        if text.endswith(suffix):
            text, position = text[: -len(suffix)], pos
    for pos, prefix in _POSITION_PREFIX.items():
        if text.startswith(prefix + " "):
            text, position = text[len(prefix) + 1 :], pos
    match = re.fullmatch(r"(\w+) that is (\w+)", text)
    if match:
        category, colour = match.groups()
        words = [colour, category]
    else:
        words = text.split()
    if not words or words[-1] not in CATEGORIES:
        raise ValueError(f"no known category at the end of {text!r}")
    colour = size = None
    for word in words[:-1]:
        if word in COLOURS:
            colour = word
        elif word in _SIZE_LOOKUP:
            size = _SIZE_LOOKUP[word]
        else:
            raise ValueError(f"unknown word {word!r} in {text!r}")
    return Descriptor(words[-1], colour, size, position)


def parse_expression(sentence: str) -> Descriptor:
    """Read a sentence produced by this module back into its :class:`Descriptor`."""
    text = sentence.strip().lower()
    if text.startswith("the "):
        text = text[4:]
    if " of the " in text:
        part, obj = text.split(" of the ", 1)
        desc = _parse_object(obj)
    elif "'s " in text:
        obj, part = text.split("'s ", 1)
        desc = _parse_object(obj)
    elif text in _PART_LOOKUP:
        return Descriptor(part=_PART_LOOKUP[text])
    else:
        return _parse_object(text)
    if part not in _PART_LOOKUP:
        raise ValueError(f"unknown part {part!r} in {sentence!r}")
    return Descriptor(desc.category, desc.colour, desc.size, desc.position, _PART_LOOKUP[part])
