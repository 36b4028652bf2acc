"""Stage 1, input: a COCO/Objects365-format detection manifest into records, and the images opened.

:func:`read_detection_manifest` reads the JSON once, before sharding (the runner shards the
sorted records it returns). :class:`LoadImages` is the first stage of every batch: it opens each
image and rejects the ones that are missing or corrupt.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

from PIL import Image, UnidentifiedImageError

from dataset_scripts.rejects import RejectLog

from ..records import image_path, object_referent_id
from .base import Reject, StageOutput


def _clip_box(bbox, width: int, height: int) -> list[float]:
    x, y, w, h = (float(v) for v in bbox)
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return [x0, y0, x1 - x0, y1 - y0]


def read_detection_manifest(
    annotations_json: str | os.PathLike | dict,
    image_dir: str | os.PathLike | None = None,
    rejects: RejectLog | None = None,
    source: str = "detections",
) -> list[dict[str, Any]]:
    """Records (sorted by ``image_id`` as strings) from COCO/Objects365 detection JSON.

    Args:
        annotations_json: the JSON file (or its parsed dict) with ``images`` (``id``,
            ``file_name``, ``width``, ``height``), ``annotations`` (``id``, ``image_id``,
            ``bbox`` as ``[x, y, w, h]``, ``category_id``) and ``categories`` (``id``, ``name``).
        image_dir: the folder ``file_name`` is relative to; when given, ``file_name`` in each
            record is made absolute so that records need no other context.
        rejects: where boxes are accounted for: a box reaching outside the image is clipped and
            recorded with :meth:`RejectLog.fix`; a box with no area after clipping, or naming an
            unknown image or category, is recorded with :meth:`RejectLog.skip`. ``None`` keeps a
            log in memory only.
        source: the ``source`` column of every row (e.g. ``"objects365"``).

    Raises:
        ValueError: the JSON lacks a required key, or an image id appears twice.
    """
    if isinstance(annotations_json, dict):
        data, name = annotations_json, "<dict>"
    else:
        name = os.fspath(annotations_json)
        with open(name, encoding="utf-8") as f:
            data = json.load(f)
    for key in ("images", "categories"):
        if key not in data:
            raise ValueError(f"{name}: a detection manifest needs an {key!r} list (COCO format)")
    rejects = rejects if rejects is not None else RejectLog(stage="input")
    categories = {c["id"]: c["name"] for c in data["categories"]}

    records: dict[str, dict[str, Any]] = {}
    for image in data["images"]:
        image_id = str(image["id"])
        if image_id in records:
            raise ValueError(f"{name}: image id {image_id} appears twice in 'images'")
        file_name = image["file_name"]
        if image_dir is not None and not os.path.isabs(file_name):
            file_name = os.path.join(os.fspath(image_dir), file_name)
        records[image_id] = {
            "image_id": image_id,
            "file_name": file_name,
            "width": int(image["width"]),
            "height": int(image["height"]),
            "source": source,
            "boxes": [],
            "referents": [],
        }

    for ann in data.get("annotations", []):
        box_id = str(ann.get("id"))
        image_id = str(ann.get("image_id"))
        record = records.get(image_id)
        if record is None:
            rejects.skip(box_id, f"box of an unknown image: {image_id}", image_id=image_id)
            continue
        if ann.get("category_id") not in categories:
            rejects.skip(box_id, f"box of an unknown category: {ann.get('category_id')}", image_id=image_id)
            continue
        bbox = [float(v) for v in ann["bbox"]]
        clipped = _clip_box(bbox, record["width"], record["height"])
        if clipped[2] <= 0 or clipped[3] <= 0:
            rejects.skip(box_id, "box with no area inside the image", image_id=image_id, bbox=bbox)
            continue
        if clipped != bbox:
            rejects.fix(box_id, "box clipped to the image", image_id=image_id, bbox=bbox, clipped=clipped)
        rejects.keep()
        record["boxes"].append({"box_id": box_id, "bbox": clipped, "category": categories[ann["category_id"]]})

    for record in records.values():
        record["boxes"].sort(key=lambda b: b["box_id"])
    return [records[k] for k in sorted(records)]


class LoadImages:
    """Open each record's image as RGB (``"_image"``) and keep its bytes (``"_image_bytes"``).

    A missing, unreadable or corrupt image is a :class:`Reject` of the whole image. The size in
    the manifest is checked against the file; a difference is corrected to the file's size and
    the boxes are clipped to it (noted in ``"_fixes"``), since masks must have the file's size; a
    box left with no area is a :class:`Reject` of its object referent id.
    """

    name = "load_images"

    def __init__(self, image_root: str | os.PathLike | None = None):
        self.image_root = image_root

    def __call__(self, records: list[dict]) -> StageOutput:
        out = StageOutput()
        for record in records:
            path = image_path(record, self.image_root)
            try:
                with open(path, "rb") as f:
                    data = f.read()
                # Pixels as stored, EXIF orientation ignored: COCO/Objects365 boxes are in that frame.
                with Image.open(io.BytesIO(data)) as img:
                    image = img.convert("RGB")
            except FileNotFoundError:
                out.rejects.append(Reject(record["image_id"], self.name, f"missing image: {path}"))
                continue
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
                out.rejects.append(Reject(record["image_id"], self.name, f"corrupt image: {path}: {err}"))
                continue
            record = dict(record)
            if (image.width, image.height) != (record["width"], record["height"]):
                record["_fixes"] = list(record.get("_fixes") or []) + [
                    f"size {record['width']}x{record['height']} in the manifest, {image.width}x{image.height} in the file"
                ]
                record["width"], record["height"] = image.width, image.height
                boxes = []
                for box in record["boxes"]:
                    clipped = _clip_box(box["bbox"], image.width, image.height)
                    if clipped[2] <= 0 or clipped[3] <= 0:
                        referent_id = object_referent_id(record["image_id"], box["box_id"])
                        out.rejects.append(Reject(record["image_id"], self.name, "box with no area inside the image file", referent_id))
                    else:
                        boxes.append({**box, "bbox": clipped})
                record["boxes"] = boxes
            record["_image"] = image
            record["_image_bytes"] = data
            out.records.append(record)
        return out


def export_detection_dataset(
    dataset,
    out_dir: str | os.PathLike,
    image_column: str = "image",
    objects_column: str = "objects",
    bbox_format: str = "xywh",
    id_column: str | None = "image_id",
) -> tuple[str, str]:
    """Write a ``datasets`` detection dataset (e.g. one loaded from the Hub) as the COCO layout the
    engine reads: ``out_dir/images/<id>.<ext>`` and ``out_dir/detections.json``.

    Each row holds an image and an objects struct of parallel lists ``bbox`` and ``category``
    (names, or ``ClassLabel`` indices, as in ``detection-datasets/coco``); ``bbox_format`` is
    ``"xywh"`` (COCO) or ``"xyxy"``. Images keep their encoded bytes when the dataset has them
    (no re-encoding). Returns ``(annotations_json, image_dir)`` for :func:`read_detection_manifest`.

    Raises:
        ValueError: a missing column, an unknown ``bbox_format``, or a repeated image id, naming the row.
    """
    import datasets as hf_datasets
    from tqdm.auto import tqdm

    if bbox_format not in ("xywh", "xyxy"):
        raise ValueError(f"bbox_format must be 'xywh' or 'xyxy', got {bbox_format!r}")
    for column in (image_column, objects_column):
        if column not in dataset.column_names:
            raise ValueError(f"the dataset has no column {column!r} (columns: {dataset.column_names})")
    # Objects come as a struct of lists (datasets' Sequence of a dict) or as a list of structs.
    feature = dataset.features[objects_column]
    category_feature = feature.get("category") if isinstance(feature, dict) else getattr(feature, "feature", {}).get("category")
    category_feature = getattr(category_feature, "feature", category_feature)
    names = category_feature.names if isinstance(category_feature, hf_datasets.ClassLabel) else None
    image_dir = os.path.join(os.fspath(out_dir), "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations, categories, seen = [], [], {}, set()
    for index, row in enumerate(tqdm(dataset.cast_column(image_column, hf_datasets.Image(decode=False)), desc="export")):
        image_id = str(row[id_column]) if id_column and id_column in row else str(index)
        if image_id in seen:
            raise ValueError(f"row {index}: image id {image_id} repeats")
        seen.add(image_id)
        image = row[image_column]
        data = image.get("bytes")
        if data is None:
            with open(image["path"], "rb") as f:
                data = f.read()
        with Image.open(io.BytesIO(data)) as img:
            width, height, extension = img.width, img.height, (img.format or "png").lower()
        file_name = f"{image_id}.{extension}"
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(data)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        objects = row[objects_column]
        if isinstance(objects, list):
            objects = {"bbox": [o["bbox"] for o in objects], "category": [o["category"] for o in objects]}
        for number, (bbox, category) in enumerate(zip(objects["bbox"], objects["category"])):
            name = names[category] if names is not None else str(category)
            category_id = categories.setdefault(name, len(categories) + 1)
            x0, y0, a, b = (float(v) for v in bbox)
            box = [x0, y0, a - x0, b - y0] if bbox_format == "xyxy" else [x0, y0, a, b]
            annotations.append({"id": f"{image_id}-{number}", "image_id": image_id, "bbox": box, "category_id": category_id})
    annotations_json = os.path.join(os.fspath(out_dir), "detections.json")
    with open(annotations_json, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": i, "name": n} for n, i in categories.items()]}, f)
    return annotations_json, image_dir
