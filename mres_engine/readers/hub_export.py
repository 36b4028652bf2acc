"""The Hub export: a ``datasets`` detection dataset (a Hub id or a folder) written once as the COCO layout the
detection manifest reader reads (``OUT/input/images/`` and ``OUT/input/detections.json``), for ``--hub_dataset``.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import replace

import datasets as hf_datasets
from PIL import Image
from tqdm.auto import tqdm

from ..options import RunnerOptions


def export_hub_input(options: RunnerOptions) -> RunnerOptions:
    """Export ``--hub_dataset`` once to ``OUT/input/`` (images + COCO JSON); options that read it from there."""
    folder = os.path.join(options.output_dir, "input")
    annotations = os.path.join(folder, "detections.json")
    if not os.path.exists(annotations):  # the JSON is written last: its presence means a whole export
        dataset = hf_datasets.load_dataset(options.hub_dataset, split=options.hub_split)
        annotations, _ = export_detection_dataset(dataset, folder, objects_column=options.hub_objects_column,
                                                  bbox_format=options.hub_bbox_format, id_column=options.hub_id_column)
    return replace(options, annotations=annotations, image_dir=os.path.join(folder, "images"), hub_dataset=None)


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
    (no re-encoding). Returns ``(annotations_json, image_dir)`` for
    :func:`~mres_engine.readers.detection.read_detection_manifest`.

    Raises:
        ValueError: a missing column, an unknown ``bbox_format``, or a repeated image id, naming the row.
    """
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
