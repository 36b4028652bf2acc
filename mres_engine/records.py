"""The per-image record that flows through the engine, typed, and its conversion to a dataset row.

An :class:`ImageRecord` is one image: what the manifest gives (``image_id``, ``file_name``, ``width``,
``height``, ``source``, the input ``boxes``), the MRES ``referents`` the stages make, and the
transient fields the stages hand each other, which are never written (:data:`TRANSIENT_FIELDS`).
Only the manifest fields travel between processes (:meth:`ImageRecord.to_manifest`, one JSON line per
image in the shard's input file); a stage returns a changed copy (:func:`dataclasses.replace`).

Referents are dicts of :data:`dataset_scripts.features.REFERENT_FEATURES` (``referent_id``,
``granularity``, ``category``, ``object_category``, ``parent_id``, ``bbox``, ``mask`` as COCO RLE
from :func:`dataset_scripts.masks.encode_mask`, ``sentences``, ``scores``), built by
:func:`dataset_scripts.features.make_referent` both when a stage makes one (:func:`new_referent`)
and when a row is written (:func:`to_mres_row`): the schema's own type, shared with the builders.
While the record flows, ``scores`` holds only the scores the stages set so far (later stages add
theirs, and the caption stage adds ``sentences``); :func:`to_mres_row` writes all the schema's
:data:`~dataset_scripts.features.SCORE_FIELDS` (a score no stage set is null).

The record is not a datatrove ``Document``: a ``Document`` is text with an id, and keeps everything else
in an untyped ``metadata`` dict (datatrove's readers drop a document without text), which is the shape
this typed record replaces. The datatrove step that carries the records is
:class:`mres_engine.executors.EngineShards`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Optional

from PIL import Image

from dataset_scripts.features import SCORE_FIELDS, make_referent

# The manifest's fields, in the order of the shard input files (written with sort_keys, so the order is the file's).
MANIFEST_FIELDS = ("image_id", "file_name", "width", "height", "source", "boxes", "referents")


@dataclass
class ImageRecord:
    """One image on its way through the stages.

    Manifest fields (written to the shard's input file, read back by the shard task):

    - ``image_id``, ``file_name`` (absolute once the manifest knows ``--image_dir``, else as given),
      ``width``, ``height`` (of the stored pixels; corrected from the file by ``load_images``), ``source``;
    - ``boxes``: the input detections, ``{"box_id": str, "bbox": [x, y, w, h] (float pixels), "category": str}``;
    - ``referents``: the MRES referents made so far (empty in the manifest).

    Transient fields, set by one stage for later ones and never written:

    - ``image``: the RGB pixels (``load_images``);
    - ``image_bytes``: the file's bytes as they will be stored (``load_images``; upright for an EXIF photo);
    - ``fixes``: safe fixes applied to the record (a size corrected from the file, a photo turned upright),
      written by the shard task as ``RejectLog.fix`` entries;
    - ``sam_embedding``: SAM's encoding of the image (``object_masks`` -> ``part_masks``, which drops it);
    - ``part_names``: ``{object category: [part names]}`` (``part_vocabulary`` -> ``part_masks``).
    """

    image_id: str
    file_name: str
    width: int
    height: int
    source: str = "detections"
    boxes: list[dict[str, Any]] = field(default_factory=list)
    referents: list[dict[str, Any]] = field(default_factory=list)
    # -- transient ----------------------------------------------------------------------------------------------
    image: Optional[Image.Image] = None
    image_bytes: Optional[bytes] = None
    fixes: list[str] = field(default_factory=list)
    sam_embedding: Any = None
    part_names: dict[str, list[str]] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        """The manifest fields as one JSON-ready dict (the shard input file's line)."""
        return {name: getattr(self, name) for name in MANIFEST_FIELDS}

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> "ImageRecord":
        """A record from a shard input file's line; a key that is not a manifest field is an error naming it."""
        unknown = set(data) - set(MANIFEST_FIELDS)
        if unknown:
            raise ValueError(f"image {data.get('image_id')}: not a manifest field: {sorted(unknown)}")
        return cls(**data)


TRANSIENT_FIELDS = tuple(f.name for f in fields(ImageRecord) if f.name not in MANIFEST_FIELDS)


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


def image_path(file_name: str, image_root: str | os.PathLike | None) -> str:
    """The image file of a record: ``file_name`` if absolute (or no root), else joined to ``image_root``."""
    if image_root is None or os.path.isabs(file_name):
        return file_name
    return os.path.join(os.fspath(image_root), file_name)


def clip_box(bbox, width: int, height: int) -> list[float]:
    """``[x, y, w, h]`` clipped to the image; a box side inside the image is kept exactly as given.

    (Computing ``(x + w) - x`` for a box that needs no clipping differs from ``w`` by a rounding
    error, which would record most float boxes as "clipped".) Used by the manifest reader (the
    manifest's size) and by ``load_images`` (the file's size, when it differs).
    """
    x, y, w, h = (float(v) for v in bbox)
    if x >= 0.0 and x + w <= width:
        x0, w1 = x, w
    else:
        x0 = min(max(x, 0.0), width)
        w1 = min(max(x + w, 0.0), width) - x0
    if y >= 0.0 and y + h <= height:
        y0, h1 = y, h
    else:
        y0 = min(max(y, 0.0), height)
        h1 = min(max(y + h, 0.0), height) - y0
    return [x0, y0, w1, h1]


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


def to_mres_row(record: ImageRecord, image_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """A row of :data:`dataset_scripts.features.MRES_FEATURES` for one record.

    The image is ``{"path": file_name, "bytes": ...}`` with the file's bytes (``image_bytes`` when
    ``load_images`` read them, else read from ``image_root``), so that the Parquet embeds it.
    Transient fields and ``boxes`` are not written; referents are sorted (each object, then its
    parts, by id); scores keep the schema's fields only.
    """
    data = record.image_bytes
    if data is None:
        path = image_path(record.file_name, image_root)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise FileNotFoundError(f"image {record.image_id}: cannot read {path}: {err}") from err
    return {
        "image": {"path": record.file_name, "bytes": data},
        "image_id": str(record.image_id),
        "width": int(record.width),
        "height": int(record.height),
        "source": record.source,
        "referents": [_schema_referent(r) for r in sorted(record.referents, key=_referent_order)],
    }


def without_referents(record: ImageRecord, removed: set[str]) -> ImageRecord:
    """The record with the referents in ``removed`` taken out; parts of a removed object keep their
    mask but lose the link (``parent_id`` None: "the part's object is not annotated", as the schema says)."""
    kept = []
    for referent in record.referents:
        if referent["referent_id"] in removed:
            continue
        if referent.get("parent_id") in removed:
            referent = {**referent, "parent_id": None}
        kept.append(referent)
    return replace(record, referents=kept)
