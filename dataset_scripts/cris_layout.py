"""Reader of the CRIS layout, in which RefCOCO_m is released (and RefCOCO-family copies circulate).

Two arrangements of the same files are accepted: the released one and the one CRIS's own
converter (``tools/data_process.py`` in CRIS.pytorch) writes::

    annotations/{split}.json      or   anns/{dataset}/{split}.json
    masks/{segment_id}.png        or   masks/{dataset}/{segment_id}.png
    images/{img_name}             (or images/train2014/, train2014/): the COCO train2014 images

A split file is a list of items: ``img_name``, ``segment_id``, ``sentences`` as
``[{idx, sent_id, sent}]`` and, where present, ``bbox``, ``cat`` and ``sentences_num``. CRIS's
conventions: ``bbox`` is ``[x_min, y_min, x_max, y_max]`` in integer pixels; ``cat`` is the
0-79 index of the COCO category (not its id); a mask is image-sized, 0/255 (0/1 is read too).

Items are grouped by image into :data:`~dataset_scripts.features.MRES_FEATURES` rows.
"""

from __future__ import annotations

import glob
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import datasets

from .coco_common import (
    COCO_CATEGORY_NAMES,
    SOURCE,
    check_sentences,
    checked_bbox,
    coco_image_id,
    find_coco_image_dir,
    find_first,
    read_group_image,
)
from .features import make_referent
from .masks import encode_mask, mask_area, mask_bbox, mask_from_png, mask_intersection
from run_support.rejects import RejectLog

RELEASED_ANNOTATION_DIR = "annotations"
CONVERTER_ANNOTATION_DIR = "anns"
MASK_DIR = "masks"


@dataclass
class CRISLayoutConfig(datasets.BuilderConfig):
    """Where the CRIS-layout files are; folders are relative to ``data_dir`` unless absolute.

    Args:
        annotation_dir: folder of ``{split}.json`` files (default: ``annotations/``, else
            ``anns/{dataset}/``).
        mask_dir: folder of ``{segment_id}.png`` masks (default: ``masks/{dataset}/`` if present,
            else ``masks/``).
        image_dir: folder of the images named by ``img_name`` (default: ``images/train2014``,
            ``images`` or ``train2014``, the first that exists).
        dataset: the converter's subfolder under ``anns/`` and ``masks/`` (``refcoco``, ...);
            when unset and ``anns/`` holds a single dataset, that one.
        splits: read only these splits (default: every ``*.json`` present).
    """

    annotation_dir: Optional[str] = None
    mask_dir: Optional[str] = None
    image_dir: Optional[str] = None
    dataset: Optional[str] = None
    splits: Optional[tuple[str, ...]] = None


def _under(base: str, path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(base, path)


def _converter_dataset(base: str, dataset: Optional[str]) -> Optional[str]:
    """The subfolder of ``anns/`` to read: ``dataset``, or the only one there (None if there is none)."""
    if dataset:
        return dataset
    anns = os.path.join(base, CONVERTER_ANNOTATION_DIR)
    names = sorted(d for d in os.listdir(anns) if os.path.isdir(os.path.join(anns, d))) if os.path.isdir(anns) else []
    if len(names) > 1:
        raise ValueError(f"{anns} holds several datasets {names}: pass dataset=<one of them> or annotation_dir=")
    return names[0] if names else None


def has_cris_layout(data_dir: str, config: CRISLayoutConfig) -> bool:
    """Whether ``data_dir`` looks like a CRIS layout (or the config names its annotation folder)."""
    if config.annotation_dir:
        return True
    if os.path.isdir(os.path.join(data_dir, RELEASED_ANNOTATION_DIR)):
        return True
    name = config.dataset or None
    return os.path.isdir(os.path.join(data_dir, CONVERTER_ANNOTATION_DIR, name) if name
                         else os.path.join(data_dir, CONVERTER_ANNOTATION_DIR))


def resolve_cris_dirs(config: CRISLayoutConfig) -> tuple[str, str, str]:
    """Absolute (annotation, mask, image) folders; ``FileNotFoundError`` naming what was looked for."""
    if not config.data_dir:
        raise ValueError("pass data_dir=<folder with annotations/ (or anns/), masks/, images/> (the downloaded release)")
    base = os.path.abspath(os.path.expanduser(config.data_dir))
    subfolder = None
    if config.annotation_dir:
        annotation_candidates = [_under(base, config.annotation_dir)]
    else:
        annotation_candidates = [os.path.join(base, RELEASED_ANNOTATION_DIR)]
        if not os.path.isdir(annotation_candidates[0]):
            subfolder = _converter_dataset(base, config.dataset)
            if subfolder:
                annotation_candidates.append(os.path.join(base, CONVERTER_ANNOTATION_DIR, subfolder))
    annotation_dir = find_first(annotation_candidates, f"annotation folder '{config.annotation_dir or RELEASED_ANNOTATION_DIR}'",
                                is_dir=True)
    if config.mask_dir:
        mask_candidates = [_under(base, config.mask_dir)]
    else:
        name = config.dataset or subfolder
        mask_candidates = ([os.path.join(base, MASK_DIR, name)] if name else []) + [os.path.join(base, MASK_DIR)]
    mask_dir = find_first(mask_candidates, f"mask folder '{config.mask_dir or MASK_DIR}'", is_dir=True)
    image_dir = find_coco_image_dir(base, config.image_dir)
    return annotation_dir, mask_dir, image_dir


def list_splits(annotation_dir: str) -> list[str]:
    """Split names of every ``{split}.json`` in ``annotation_dir``, sorted."""
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(annotation_dir, "*.json")))


def cris_split_generators(
    config: CRISLayoutConfig, default_granularity: Optional[str] = None, id_prefix: Optional[str] = None
) -> list[datasets.SplitGenerator]:
    """One ``SplitGenerator`` per split file; ``id_prefix`` (default: the split) starts every referent_id."""
    annotation_dir, mask_dir, image_dir = resolve_cris_dirs(config)
    splits = list(config.splits) if config.splits else list_splits(annotation_dir)
    if not splits:
        raise FileNotFoundError(f"no split file (*.json) found in {annotation_dir}")
    generators = []
    for split in splits:
        path = find_first([os.path.join(annotation_dir, f"{split}.json")], f"annotation file of split '{split}'")
        generators.append(datasets.SplitGenerator(name=split, gen_kwargs={
            "split": split, "annotation_file": path, "image_dir": image_dir, "mask_dir": mask_dir,
            "default_granularity": default_granularity, "id_prefix": id_prefix,
        }))
    return generators


def parse_category(cat: Any, granularity_hint: Optional[str]) -> tuple[str, str, Optional[str], Optional[str]]:
    """``(category, object_category, granularity, problem)`` from a CRIS ``cat`` field.

    An int (or digit string) is the 0-79 index of a COCO category (an object); one outside that
    range leaves the category empty and ``problem`` says so. A string ``"dog:ear"``,
    ``"ear of dog"`` or ``"dog's ear"`` names a part; another string names an object category.
    """
    if cat is None:
        return "", "", None, None
    if isinstance(cat, int) and not isinstance(cat, bool) or isinstance(cat, str) and cat.strip().isdigit():
        index = int(cat)
        if 0 <= index < len(COCO_CATEGORY_NAMES):
            name = COCO_CATEGORY_NAMES[index]
            return name, name, "object", None
        return "", "", "object", f"cat is not a COCO category index (0-79), category left empty: {cat!r}"
    text = str(cat).strip()
    for sep, part_first in ((":", False), (" of ", True), ("'s ", False)):
        if sep in text:
            a, b = (s.strip() for s in text.split(sep, 1))
            part, obj = (a, b) if part_first else (b, a)
            return part, obj, "part", None
    return text, text, granularity_hint if granularity_hint == "part" else "object", None


def split_granularity(split: str) -> Optional[str]:
    """Granularity that a split's name implies (``val_part_only`` -> part), else None."""
    name = split.lower()
    if "part_only" in name:
        return "part"
    if "object_only" in name or "obj_only" in name:
        return "object"
    return None


def _read_items(annotation_file: str) -> list:
    try:
        with open(annotation_file, encoding="utf-8") as f:
            items = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{annotation_file} is not valid JSON: {err}") from err
    if not isinstance(items, list):
        raise ValueError(f"{annotation_file}: expected a list of items, got {type(items).__name__}")
    return items


def read_cris_split(
    split: str,
    annotation_file: str,
    image_dir: str,
    mask_dir: str,
    rejects: RejectLog,
    *,
    source: str = SOURCE,
    default_granularity: Optional[str] = None,
    id_prefix: Optional[str] = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(image_id, row)`` for one CRIS split, skipping (and logging) bad items.

    A referent's id is ``{id_prefix}/{segment_id}`` (``id_prefix`` defaults to the split). Its
    granularity: its ``granularity``/``type`` field if it has one, else what the split name
    implies, else what its ``cat`` says (``parse_category``), else ``default_granularity`` or
    ``"object"``. Fixes are recorded only for referents that are kept.
    """
    prefix = id_prefix or split
    by_image: "OrderedDict[str, list[tuple[str, dict]]]" = OrderedDict()
    seen: set = set()
    for position, item in enumerate(_read_items(annotation_file)):
        if not isinstance(item, dict) or "img_name" not in item or "segment_id" not in item:
            rejects.skip(f"{split}[{position}]", "item lacks img_name or segment_id", split=split)
            continue
        rid = f"{prefix}/{item['segment_id']}"
        if rid in seen:
            rejects.skip(rid, f"duplicate segment_id in the split: item {position}", split=split)
            continue
        seen.add(rid)
        by_image.setdefault(item["img_name"], []).append((rid, item))

    hint = split_granularity(split)
    image_of = {rid: img_name for img_name, group in by_image.items() for rid, _ in group}
    for img_name, group in by_image.items():
        loaded = read_group_image(os.path.join(image_dir, img_name), [rid for rid, _ in group], rejects, split)
        if loaded is None:
            continue
        image_bytes, width, height = loaded
        referents = []
        for rid, item in group:
            referent = _referent(item, rid, prefix, mask_dir, width, height, hint, default_granularity, rejects, split)
            if referent is not None:
                referents.append(referent)
        _check_parent_links(referents, img_name, image_of, rejects, split)
        if referents:
            image_id = coco_image_id(img_name)
            yield image_id, {
                "image": {"bytes": image_bytes, "path": img_name},
                "image_id": image_id,
                "width": width,
                "height": height,
                "source": source,
                "referents": referents,
            }


def _check_parent_links(referents: list[dict], img_name: str, image_of: dict[str, str], rejects: RejectLog,
                        split: str) -> None:
    """Unlink (and record as a fix) every part whose ``parent_id`` cannot be its object in this row.

    A parent must be a kept object of the same image whose mask the part overlaps. A parent segment that is
    not annotated in the split, lies in another image, was skipped, is itself a part, or shares no pixel
    with the part is not its object: the part is kept with ``parent_id`` null, and the reason is logged.
    """
    in_row = {r["referent_id"]: r for r in referents}
    for referent in referents:
        parent_id = referent["parent_id"]
        if parent_id is None:
            continue
        parent = in_row.get(parent_id)
        if parent_id not in image_of:
            reason = f"parent {parent_id} is not annotated in the split"
        elif image_of[parent_id] != img_name:
            reason = f"parent {parent_id} belongs to another image ({image_of[parent_id]}, not {img_name})"
        elif parent is None:
            reason = f"parent {parent_id} was skipped"
        elif parent["granularity"] != "object":
            reason = f"parent {parent_id} is a part, not an object"
        elif mask_area(mask_intersection(referent["mask"], parent["mask"])) == 0:
            reason = f"part lies wholly outside its parent {parent_id}"
        else:
            continue
        rejects.fix(referent["referent_id"], f"parent link removed: {reason}", split=split)
        referent["parent_id"] = None


def _referent(item, rid, prefix, mask_dir, width, height, hint, default_granularity, rejects, split) -> Optional[dict]:
    """One referent of a CRIS item, or None after logging why it is skipped."""
    fixes = []
    sentences, problem = check_sentences(item.get("sentences"))
    if not sentences:
        rejects.skip(rid, problem, split=split)
        return None
    if problem:
        fixes.append(problem)
    mask_path = os.path.join(mask_dir, f"{item['segment_id']}.png")
    if not os.path.isfile(mask_path):
        rejects.skip(rid, f"missing mask: {mask_path}", split=split)
        return None
    try:
        mask = mask_from_png(mask_path)
    except ValueError as err:
        rejects.skip(rid, f"unreadable mask PNG: {err}", split=split)
        return None
    if mask.shape != (height, width):
        rejects.skip(rid, f"mask size {mask.shape[0]}x{mask.shape[1]} differs from image size {height}x{width}",
                     split=split)
        return None
    if not mask.any():
        rejects.skip(rid, f"empty mask: {mask_path}", split=split)
        return None
    rle = encode_mask(mask)
    category, object_category, cat_granularity, problem = parse_category(item.get("cat"), hint)
    if problem:
        fixes.append(problem)
    granularity = item.get("granularity") or item.get("type")
    if granularity not in ("object", "part"):
        granularity = hint or cat_granularity or default_granularity or "object"
    bbox, problem = checked_bbox(item.get("bbox"), width, height, mask_bbox(rle), xyxy=True)
    if problem:
        fixes.append(problem)
    parent = item.get("parent_segment_id", item.get("object_segment_id"))
    for reason in fixes:
        rejects.fix(rid, reason, split=split)
    rejects.keep()
    parent_id = f"{prefix}/{parent}" if parent is not None and granularity == "part" else None
    return make_referent(rid, granularity, category, object_category, bbox, rle, sentences, parent_id=parent_id)
