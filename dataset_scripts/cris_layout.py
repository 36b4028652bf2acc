"""Reader of the CRIS layout, in which RefCOCO_m is released (and RefCOCO-family copies circulate).

::

    annotations/{split}.json   list of items: img_name, segment_id, sentences [{idx, sent_id, sent}],
                               optionally bbox [x, y, w, h], cat, sentences_num
    masks/{segment_id}.png     0/255 mask of the referent, image-sized
    images/{img_name}          the COCO train2014 image

Items are grouped by image into :data:`~dataset_scripts.features.MRES_FEATURES` rows.
"""

from __future__ import annotations

import glob
import json
import os
from collections import OrderedDict
from typing import Any, Iterator, Optional

from .coco_common import COCO_CATEGORIES, SOURCE, clip_bbox, coco_image_id, read_group_image, parse_sentence_records
from .masks import encode_mask, mask_bbox, mask_from_png
from .rejects import RejectLog


def list_splits(annotation_dir: str) -> list[str]:
    """Split names of every ``{split}.json`` in ``annotation_dir``, sorted."""
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(annotation_dir, "*.json")))


def parse_category(cat: Any, granularity_hint: Optional[str]) -> tuple[str, str, Optional[str]]:
    """``(category, object_category, granularity)`` from a CRIS ``cat`` field.

    An int is a COCO category id (an object). A string ``"dog:ear"``, ``"ear of dog"`` or
    ``"dog's ear"`` names a part; a plain string names an object category.
    """
    if cat is None:
        return "", "", None
    if isinstance(cat, int) or (isinstance(cat, str) and cat.isdigit()):
        name = COCO_CATEGORIES.get(int(cat), str(cat))
        return name, name, "object"
    text = str(cat).strip()
    for sep, part_first in ((":", False), (" of ", True), ("'s ", False)):
        if sep in text:
            a, b = (s.strip() for s in text.split(sep, 1))
            part, obj = (a, b) if part_first else (b, a)
            return part, obj, "part"
    return text, text, granularity_hint if granularity_hint == "part" else "object"


def split_granularity(split: str) -> Optional[str]:
    """Granularity that a split's name implies (``val_part_only`` -> part), else None."""
    name = split.lower()
    if "part_only" in name:
        return "part"
    if "object_only" in name or "obj_only" in name:
        return "object"
    return None


def read_cris_split(
    split: str,
    annotation_file: str,
    image_dir: str,
    mask_dir: str,
    rejects: RejectLog,
    *,
    source: str = SOURCE,
    default_granularity: Optional[str] = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(image_id, row)`` for one CRIS split, skipping (and logging) bad items.

    Granularity of an item: its ``granularity``/``type`` field if it has one, else what the
    split name implies, else what its ``cat`` says (``parse_category``), else
    ``default_granularity`` or ``"object"``.
    """
    try:
        with open(annotation_file, encoding="utf-8") as f:
            items = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{annotation_file} is not valid JSON: {err}") from err
    if not isinstance(items, list):
        raise ValueError(f"{annotation_file}: expected a list of items, got {type(items).__name__}")

    by_image: "OrderedDict[str, list[tuple[int, dict]]]" = OrderedDict()
    for position, item in enumerate(items):
        if not isinstance(item, dict) or "img_name" not in item or "segment_id" not in item:
            rejects.skip(f"{split}[{position}]", "item lacks img_name or segment_id", split=split)
            continue
        by_image.setdefault(item["img_name"], []).append((position, item))

    seen_segments: set = set()
    hint = split_granularity(split)
    for img_name, group in by_image.items():
        ids = [f"{split}/{item['segment_id']}" for _, item in group]
        loaded = read_group_image(os.path.join(image_dir, img_name), ids, rejects, split)
        if loaded is None:
            continue
        image_bytes, width, height = loaded

        referents = []
        for (_, item), rid in zip(group, ids):
            if rid in seen_segments:
                rejects.skip(rid, "duplicate segment_id in the split", split=split)
                continue
            seen_segments.add(rid)
            sentences = parse_sentence_records(item.get("sentences"))
            if not sentences:
                rejects.skip(rid, "empty sentence list", split=split)
                continue
            mask_path = os.path.join(mask_dir, f"{item['segment_id']}.png")
            if not os.path.isfile(mask_path):
                rejects.skip(rid, f"missing mask {mask_path}", split=split)
                continue
            try:
                mask = mask_from_png(mask_path)
            except ValueError as err:
                rejects.skip(rid, f"unreadable mask PNG: {err}", split=split)
                continue
            if mask.shape != (height, width):
                rejects.skip(
                    rid, f"mask size {mask.shape[0]}x{mask.shape[1]} differs from image size {height}x{width}",
                    split=split,
                )
                continue
            if not mask.any():
                rejects.skip(rid, "empty mask", split=split)
                continue
            rle = encode_mask(mask)
            category, object_category, cat_granularity = parse_category(item.get("cat"), hint)
            granularity = item.get("granularity") or item.get("type")
            if granularity not in ("object", "part"):
                granularity = hint or cat_granularity or default_granularity or "object"
            bbox = mask_bbox(rle)
            if item.get("bbox") is not None:
                clipped = clip_bbox(item["bbox"], width, height)
                if clipped is None:
                    rejects.fix(rid, "bbox outside the image, replaced by the mask's box", split=split)
                else:
                    if clipped != [float(v) for v in item["bbox"]]:
                        rejects.fix(rid, "bbox clipped to the image", split=split)
                    bbox = clipped
            parent = item.get("parent_segment_id", item.get("object_segment_id"))
            referents.append({
                "referent_id": rid,
                "granularity": granularity,
                "category": category,
                "object_category": object_category,
                "parent_id": f"{split}/{parent}" if parent is not None and granularity == "part" else None,
                "bbox": bbox,
                "mask": rle,
                "sentences": sentences,
                "scores": None,
            })
            rejects.keep()
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
