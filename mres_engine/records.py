"""The per-image record that flows through the engine's stages, and its conversion to a dataset row.

A record is a plain dict for one image:

- ``image_id`` (str), ``file_name`` (str: relative to the image root, or absolute),
  ``width``, ``height`` (int), ``source`` (str);
- ``boxes``: the input detections, a list of ``{"box_id": str, "bbox": [x, y, w, h] (float
  pixels), "category": str}``;
- ``referents``: MRES referents as :data:`dataset_scripts.features.REFERENT_FEATURES`
  (``referent_id``, ``granularity``, ``category``, ``object_category``, ``parent_id``, ``bbox``,
  ``mask`` as COCO RLE from :func:`dataset_scripts.masks.encode_mask`, ``sentences``,
  ``scores``), built by :func:`dataset_scripts.features.make_referent` both when a stage makes
  one (:func:`new_referent`) and when a row is written (:func:`to_mres_row`). While the record
  flows, ``scores`` holds only the scores the stages set so far (later stages add theirs, and
  the caption stage adds ``sentences``); :func:`to_mres_row` writes all the schema's
  :data:`~dataset_scripts.features.SCORE_FIELDS` (``clip``, ``clip_score``, ``sam_iou``,
  ``sam_stability``, ``detector``; a score no stage set is null);
- transient keys starting with ``"_"``, set by stages and never written: ``"_image"`` (the RGB
  PIL image), ``"_image_bytes"`` (the file's bytes), ``"_fixes"`` (safe fixes applied to the
  record, e.g. an image size corrected from the file, for the runner's ``RejectLog.fix``),
  ``"_sam_embedding"`` (SAM's image encoding, between the object and part stages),
  ``"_part_names"`` ({object category: [part names]}, between the vocabulary and part stages).

The detection manifest reader (COCO/Objects365 JSON -> records) lives in
:mod:`mres_engine.stages.input` as :func:`~mres_engine.stages.input.read_detection_manifest`.
"""

from __future__ import annotations

import os
from typing import Any

from dataset_scripts.features import SCORE_FIELDS, make_referent


def object_referent_id(image_id: str, box_id: str) -> str:
    """The referent id of the object made from input box ``box_id`` (unique across the dataset)."""
    return f"{image_id}/o{box_id}"


def part_referent_id(object_id: str, index: int) -> str:
    """The referent id of the ``index``-th part found inside object ``object_id``."""
    return f"{object_id}/p{index}"


def new_referent(
    referent_id: str,
    granularity: str,
    category: str,
    object_category: str,
    bbox: list[float],
    mask: dict[str, Any],
    parent_id: str | None = None,
    scores: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A referent made by a stage, with no sentences yet (the caption stage adds them).

    Built by :func:`~dataset_scripts.features.make_referent`, which checks it (granularity, bbox,
    score names); ``scores`` keeps only the scores given here, for later stages to add to.
    """
    referent = make_referent(referent_id, granularity, category, object_category, bbox, mask,
                             parent_id=parent_id, scores=scores or {})
    referent["scores"] = dict(scores or {})
    return referent


def image_path(record: dict[str, Any], image_root: str | os.PathLike | None) -> str:
    """The image file of a record: ``file_name`` if absolute (or no root), else joined to ``image_root``."""
    file_name = record["file_name"]
    if image_root is None or os.path.isabs(file_name):
        return file_name
    return os.path.join(os.fspath(image_root), file_name)


def _referent_order(referent: dict[str, Any]) -> tuple:
    # Each object, then its parts; ids compared as strings so the order never depends on the run.
    object_id = referent["parent_id"] if referent["granularity"] == "part" and referent["parent_id"] else referent["referent_id"]
    return (object_id, referent["granularity"] != "object", referent["referent_id"])


def _schema_referent(referent: dict[str, Any]) -> dict[str, Any]:
    # Every schema score field (null when no stage set it); a score the schema does not know is not written.
    scores = referent.get("scores")
    if scores is not None:
        scores = {name: value for name, value in scores.items() if name in SCORE_FIELDS}
    return make_referent(referent["referent_id"], referent["granularity"], referent["category"], referent["object_category"],
                         referent["bbox"], referent["mask"], sentences=referent.get("sentences") or [],
                         parent_id=referent.get("parent_id"), scores=scores)


def to_mres_row(record: dict[str, Any], image_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """A row of :data:`dataset_scripts.features.MRES_FEATURES` for one record.

    The image is ``{"path": file_name, "bytes": ...}`` with the file's bytes (``"_image_bytes"``
    when a stage already read them, else read from ``image_root``), so that the Parquet embeds
    it. Transient keys and ``boxes`` are dropped; referents are sorted (each object, then its
    parts, by id); scores keep the schema's fields only.
    """
    data = record.get("_image_bytes")
    if data is None:
        path = image_path(record, image_root)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise FileNotFoundError(f"image {record['image_id']}: cannot read {path}: {err}") from err
    return {
        "image": {"path": record["file_name"], "bytes": data},
        "image_id": str(record["image_id"]),
        "width": int(record["width"]),
        "height": int(record["height"]),
        "source": record["source"],
        "referents": [_schema_referent(r) for r in sorted(record.get("referents") or [], key=_referent_order)],
    }


def without_referents(record: dict[str, Any], removed: set[str]) -> dict[str, Any]:
    """The record with the referents in ``removed`` taken out; parts of a removed object keep their
    mask but lose the link (``parent_id`` None: "the part's object is not annotated", as the schema says)."""
    kept = []
    for referent in record["referents"]:
        if referent["referent_id"] in removed:
            continue
        if referent.get("parent_id") in removed:
            referent = {**referent, "parent_id": None}
        kept.append(referent)
    return {**record, "referents": kept}
