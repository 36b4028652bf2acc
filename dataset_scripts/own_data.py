"""Your own images, sentences and masks, as an MRES dataset.

A folder in datasets' ImageFolder convention: the images, and beside them one annotation file,
either ``metadata.jsonl`` (our format, below) or ``annotations.json`` (COCO instances with referring
sentences, what annotation tools export). Splits are subfolders (``train/``, ``validation/``,
``test/``, any name), each with its images and its annotation file; a folder with the annotation
file at its top is one split, ``train``::

    my_folder/
      train/metadata.jsonl   train/img_0001.jpg   train/masks/img_0001_car.png ...
      validation/metadata.jsonl   validation/...

``metadata.jsonl``: one JSON object per line, one line per image::

    {"file_name": "img_0001.jpg",
     "referents": [
       {"id": "car", "granularity": "object", "category": "car",
        "sentences": ["the red car on the left"],
        "mask": "masks/img_0001_car.png"},
       {"id": "wheel", "granularity": "part", "category": "wheel", "parent": "car",
        "sentences": ["the front wheel of the red car"],
        "mask": [[12.5, 40, 30, 40, 30, 58, 12.5, 58]]},
       {"granularity": "object", "sentences": ["the dog"],
        "mask": {"size": [480, 640], "counts": "PPYo0..."}}]}

- ``file_name`` (required): the image, relative to the split folder.
- ``image_id`` (optional): defaults to ``file_name`` without its extension.
- ``referents`` (required, non-empty), each with:
  - ``sentences`` (required): non-empty list of referring expressions, each alone names this referent;
  - ``mask`` (required): a PNG path relative to the split folder (image-sized, 0/255 or 0/1), a COCO RLE
    ``{"size": [height, width], "counts": ...}``, or COCO polygons ``[[x0, y0, x1, y1, ...], ...]`` in pixels;
  - ``granularity`` (required): ``"object"`` or ``"part"``;
  - ``category`` (optional): the object's category, or the part's name;
  - ``parent`` (optional, parts only): the ``id`` of the part's object, a referent of the same line;
  - ``id`` (optional): unique within the line; defaults to the referent's position.

``annotations.json`` (COCO): ``images`` (``id``, ``file_name``, ``width``, ``height``), ``categories``
(``id``, ``name``) and ``annotations`` with ``id``, ``image_id``, ``category_id``, ``segmentation``
(polygons, or RLE as for ``iscrowd``) and ``sentences`` (a list of strings, or of refer-style
``{"sent": ...}`` records); optionally ``granularity`` (default ``"object"``) and, for a part,
``parent_id``: the ``id`` of its object's annotation on the same image.

Every row is checked: a missing or unknown key, a granularity other than object/part, a mask not of
the image's size, an empty mask, an unreadable PNG or image, a parent that is not an object of the same
image, a duplicate id: the build stops with one line naming the file, the line (or annotation index and
id) and the key. Nothing is dropped silently. A referent's ``referent_id`` in the dataset is
``{split}/{image_id}/{id}``.

    from dataset_scripts.own_data import OwnData, build_own_data
    build_own_data("my_folder", "data/my_folder")          # Parquet + dataset card
    load_dataset("data/my_folder", streaming=True)
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import datasets

from .builder_base import MRESBuilder
from .coco_common import sentence_record_text
from .features import GRANULARITIES, make_referent
from .masks import mask_area, mask_bbox, mask_intersection
from .strict_rows import (
    RowError, check_sentences, jsonl_records, mask_from_any, prepare, publish_built, read_image_at,
)

METADATA_FILENAME = "metadata.jsonl"
COCO_FILENAME = "annotations.json"
SOURCE = "own-data"

ROW_KEYS = {"file_name", "image_id", "referents"}
REFERENT_KEYS = {"id", "sentences", "mask", "granularity", "category", "parent"}


@dataclass
class OwnDataConfig(datasets.BuilderConfig):
    """Args:
        source: the ``source`` column of every row (default ``own-data``).
    """

    source: str = SOURCE


def find_split_folders(data_dir: str) -> "OrderedDict[str, tuple[str, str]]":
    """``{split: (folder, annotation file)}``: the top folder as ``train`` if it holds an annotation file, else
    every subfolder that holds one. ``FileNotFoundError`` saying what was looked for when there is none."""
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"no folder at {data_dir}")

    def annotation_file(folder):
        found = [os.path.join(folder, n) for n in (METADATA_FILENAME, COCO_FILENAME) if os.path.isfile(os.path.join(folder, n))]
        if len(found) > 1:
            raise ValueError(f"{folder} holds both {METADATA_FILENAME} and {COCO_FILENAME}: keep one annotation file per split")
        return found[0] if found else None

    top = annotation_file(data_dir)
    if top:
        return OrderedDict(train=(data_dir, top))
    splits = OrderedDict()
    for name in sorted(os.listdir(data_dir)):
        folder = os.path.join(data_dir, name)
        if os.path.isdir(folder) and (path := annotation_file(folder)):
            splits[name] = (folder, path)
    if not splits:
        raise FileNotFoundError(f"no {METADATA_FILENAME} or {COCO_FILENAME} in {data_dir} nor in its subfolders (one per split)")
    return splits


class OwnData(MRESBuilder):
    """A user's folder (``data_dir``) of images with ``metadata.jsonl`` or COCO ``annotations.json`` per split."""

    BUILDER_CONFIG_CLASS = OwnDataConfig
    BUILDER_CONFIGS = [OwnDataConfig(name="default", description="a folder of your own images, sentences and masks")]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 100
    DESCRIPTION = "Referring expression segmentation data of one's own (images, sentences, masks at object and part level)."
    LICENSE = "other"

    def source_files(self, split: str) -> list[str]:
        """The annotation file a split is read from (for the evaluation's dataset identity)."""
        return [find_split_folders(self._data_dir())[split][1]]

    def _data_dir(self) -> str:
        if not self.config.data_dir:
            raise ValueError("pass data_dir=<folder with metadata.jsonl or annotations.json, or one subfolder per split>")
        return self.config.data_dir

    def _split_generators(self, dl_manager):
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "folder": folder, "path": path})
            for split, (folder, path) in find_split_folders(self._data_dir()).items()
        ]

    def _generate_examples(self, split, folder, path):
        reader = read_coco_split if path.endswith(".json") else read_metadata_split
        rejects = self._reject_log()
        for key, row in reader(split, folder, path, source=self.config.source):
            rejects.keep(len(row["referents"]))
            yield key, row


# -- metadata.jsonl ---------------------------------------------------------------------------------------


def read_metadata_split(split: str, folder: str, path: str, source: str = SOURCE) -> Iterator[tuple[str, dict]]:
    """Yield ``(image_id, row)`` for every line of a ``metadata.jsonl``; :class:`RowError` on the first bad one."""
    seen_images: dict[str, str] = {}  # image id -> the line that named it first
    for number, record in jsonl_records(path):
        item = f"line {number}"
        if not isinstance(record, dict):
            raise RowError(path, item, "(json)", f"expected a JSON object, got {type(record).__name__}")
        image_id, row = _metadata_row(record, split, folder, path, item, source)
        if image_id in seen_images:
            raise RowError(path, item, "image_id" if "image_id" in record else "file_name",
                           f"image id {image_id!r} already used on {seen_images[image_id]}")
        seen_images[image_id] = item
        yield image_id, row


def _metadata_row(record: dict, split: str, folder: str, path: str, item: str, source: str) -> tuple[str, dict]:
    unknown = sorted(set(record) - ROW_KEYS)
    if unknown:
        raise RowError(path, item, unknown[0], f"unknown key; a line has {sorted(ROW_KEYS)}")
    file_name = _required(record, "file_name", path, item)
    if not isinstance(file_name, str) or not file_name.strip():
        raise RowError(path, item, "file_name", f"expected a file name, got {file_name!r}")
    image_id = str(record.get("image_id") or os.path.splitext(file_name)[0])
    image_bytes, width, height = read_image_at(os.path.join(folder, file_name), (path, item, "file_name"))
    raw = _required(record, "referents", path, item)
    if not isinstance(raw, list) or not raw:
        raise RowError(path, item, "referents", "expected a non-empty list of referents")
    referents, where_of = [], {}
    for position, ref in enumerate(raw):
        prefix = f"referents[{position}]"
        if not isinstance(ref, dict):
            raise RowError(path, item, prefix, f"expected an object, got {type(ref).__name__}")
        unknown = sorted(set(ref) - REFERENT_KEYS)
        if unknown:
            raise RowError(path, item, f"{prefix}.{unknown[0]}", f"unknown key; a referent has {sorted(REFERENT_KEYS)}")
        local_id = str(ref.get("id", position))
        if local_id in where_of:
            raise RowError(path, item, f"{prefix}.id", f"id {local_id!r} already used by referents[{where_of[local_id]}]")
        where_of[local_id] = position
        granularity = _required(ref, "granularity", path, item, prefix)
        if granularity not in GRANULARITIES:
            raise RowError(path, item, f"{prefix}.granularity", f"must be one of {list(GRANULARITIES)}, got {granularity!r}")
        sentences = check_sentences(_required(ref, "sentences", path, item, prefix), (path, item, f"{prefix}.sentences"))
        rle = mask_from_any(_required(ref, "mask", path, item, prefix), height, width, folder, (path, item, f"{prefix}.mask"))
        category = ref.get("category")
        if category is not None and not isinstance(category, str):
            raise RowError(path, item, f"{prefix}.category", f"expected a string, got {category!r}")
        parent = ref.get("parent")
        if parent is not None and granularity != "part":
            raise RowError(path, item, f"{prefix}.parent", "only a part has a parent (this referent is an object)")
        referents.append({"local_id": local_id, "granularity": granularity, "category": category or "", "rle": rle,
                          "sentences": sentences, "parent": None if parent is None else str(parent),
                          "parent_where": (path, item, f"{prefix}.parent")})
    return image_id, _row(referents, f"{split}/{image_id}", image_id, image_bytes, file_name, width, height, source)


# -- COCO instances with sentences ----------------------------------------------------------------------


def read_coco_split(split: str, folder: str, path: str, source: str = SOURCE) -> Iterator[tuple[str, dict]]:
    """Yield ``(image_id, row)`` per image of a COCO ``annotations.json`` with sentences; :class:`RowError` on a bad one."""
    try:
        with open(path, encoding="utf-8") as f:
            coco = json.load(f)
    except json.JSONDecodeError as err:
        raise RowError(path, "the file", "(json)", f"not valid JSON: {err}") from err
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key) if isinstance(coco, dict) else None, list):
            raise RowError(path, "the file", key, "a COCO file needs lists 'images', 'annotations' and 'categories'")
    categories = {}
    for i, cat in enumerate(coco["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise RowError(path, f"categories[{i}]", "name" if isinstance(cat, dict) and "id" in cat else "id",
                           "a category needs 'id' and 'name'")
        categories[cat["id"]] = str(cat["name"])
    images = OrderedDict()
    for i, image in enumerate(coco["images"]):
        for key in ("id", "file_name"):
            if not isinstance(image, dict) or key not in image:
                raise RowError(path, f"images[{i}]", key, "missing key")
        if image["id"] in images:
            raise RowError(path, f"images[{i}] (id {image['id']})", "id", "duplicate image id")
        images[image["id"]] = (i, image)
    by_image: dict[Any, list] = {}
    seen_ids: dict[Any, int] = {}
    for i, ann in enumerate(coco["annotations"]):
        item = f"annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        if not isinstance(ann, dict):
            raise RowError(path, item, "(annotation)", f"expected an object, got {type(ann).__name__}")
        for key in ("id", "image_id", "segmentation", "sentences"):
            _required(ann, key, path, item)
        if ann["id"] in seen_ids:
            raise RowError(path, item, "id", f"duplicate annotation id, also annotations[{seen_ids[ann['id']]}]")
        seen_ids[ann["id"]] = i
        if ann["image_id"] not in images:
            raise RowError(path, item, "image_id", f"no image with id {ann['image_id']!r} in 'images'")
        if ann.get("category_id") is not None and ann["category_id"] not in categories:
            raise RowError(path, item, "category_id", f"no category with id {ann['category_id']!r} in 'categories'")
        by_image.setdefault(ann["image_id"], []).append((i, item, ann))
    for image_key, (index, image) in images.items():
        anns = by_image.get(image_key)
        if not anns:
            continue  # an image nobody annotated carries no referent: nothing to refer to, nothing lost
        file_name = str(image["file_name"])
        image_item = f"images[{index}] (id {image_key})"
        image_bytes, width, height = read_image_at(os.path.join(folder, file_name), (path, image_item, "file_name"))
        for key, actual in (("width", width), ("height", height)):
            # COCO's width and height are the image's as shown (after EXIF): polygons are drawn in that frame
            if image.get(key) is not None and image[key] != actual:
                raise RowError(path, image_item, key, f"{image[key]!r}, but {file_name} is {width}x{height} "
                                                      "(width x height, after its EXIF orientation)")
        referents = []
        for i, item, ann in anns:
            granularity = ann.get("granularity", "object")
            if granularity not in GRANULARITIES:
                raise RowError(path, item, "granularity", f"must be one of {list(GRANULARITIES)}, got {granularity!r}")
            texts = [sentence_record_text(s) for s in ann["sentences"]] if isinstance(ann["sentences"], list) else ann["sentences"]
            sentences = check_sentences(texts, (path, item, "sentences"))
            segmentation = ann["segmentation"]
            if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
                segmentation = {**segmentation, "size": [int(v) for v in segmentation.get("size", [])]}
            rle = mask_from_any(segmentation, height, width, folder, (path, item, "segmentation"))
            parent = ann.get("parent_id")
            if parent is not None and granularity != "part":
                raise RowError(path, item, "parent_id", "only a part has a parent (this annotation is an object)")
            referents.append({"local_id": str(ann["id"]), "granularity": granularity,
                              "category": categories.get(ann.get("category_id"), ""), "rle": rle, "sentences": sentences,
                              "parent": None if parent is None else str(parent), "parent_where": (path, item, "parent_id")})
        image_id = str(image_key)
        yield image_id, _row(referents, f"{split}/{image_id}", image_id, image_bytes, file_name, width, height, source)


# -- shared -----------------------------------------------------------------------------------------------


def _required(record: dict, key: str, path: str, item: str, prefix: str = ""):
    if key not in record or record[key] is None:
        raise RowError(path, item, f"{prefix}.{key}" if prefix else key, "missing")
    return record[key]


def _row(referents: list[dict], id_prefix: str, image_id: str, image_bytes: bytes, file_name: str, width: int,
         height: int, source: str) -> dict:
    """The MRES row of one image; a part's parent must be an object of the same image that it overlaps."""
    by_local = {r["local_id"]: r for r in referents}
    out = []
    for ref in referents:
        parent_id, object_category = None, ref["category"]
        if ref["parent"] is not None:
            location = ref["parent_where"]
            parent = by_local.get(ref["parent"])
            if parent is None:
                raise RowError(*location, f"no referent with id {ref['parent']!r} on this image")
            if parent["granularity"] != "object":
                raise RowError(*location, f"referent {ref['parent']!r} is a part, not an object")
            if mask_area(mask_intersection(ref["rle"], parent["rle"])) == 0:
                raise RowError(*location, f"the part shares no pixel with its parent {ref['parent']!r}")
            parent_id, object_category = f"{id_prefix}/{parent['local_id']}", parent["category"]
        out.append(make_referent(f"{id_prefix}/{ref['local_id']}", ref["granularity"], ref["category"], object_category,
                                 mask_bbox(ref["rle"]), ref["rle"], ref["sentences"], parent_id=parent_id))
    return {"image": {"bytes": image_bytes, "path": file_name}, "image_id": image_id, "width": width, "height": height,
            "source": source, "referents": out}


def is_own_data_folder(path: str) -> bool:
    """Whether ``path`` is a folder of one's own data: a ``metadata.jsonl`` or ``annotations.json`` at its top or in a
    subfolder (one per split). A folder written by ``publish`` (Parquet shards and a card) is not one."""
    path = os.path.expanduser(str(path))
    if not os.path.isdir(path):
        return False
    folders = [path] + [os.path.join(path, n) for n in os.listdir(path) if os.path.isdir(os.path.join(path, n))]
    return any(os.path.isfile(os.path.join(f, name)) for f in folders for name in (METADATA_FILENAME, COCO_FILENAME))


def load_own_data(data_dir: str, split: str, *, streaming: bool = False, cache_dir: Optional[str] = None):
    """One split of the folder ``data_dir``, built (every row checked) into the datasets cache and read from there.

    The folder is read again on every call (the cache is keyed on the config, not on the files, so a repaired
    row is seen). A bad row raises its :class:`RowError` (file, line, key), not datasets' wrapper; a split the
    folder does not have raises ``ValueError`` naming the ones it has. With ``streaming=True`` the built split is
    returned as an ``IterableDataset``.
    """
    splits = find_split_folders(data_dir)
    if split not in splits:
        raise ValueError(f"{data_dir} has no split {split!r}; its splits: {sorted(splits)} (one subfolder with "
                         f"{METADATA_FILENAME} or {COCO_FILENAME} per split; a folder with the file at its top is "
                         "the split 'train')")
    builder = OwnData(data_dir=data_dir, cache_dir=cache_dir)
    prepare(builder)
    dataset = builder.as_dataset(split=split)
    return dataset.to_iterable_dataset() if streaming else dataset


def build_own_data(data_dir: str, output_dir: Optional[str], *, cache_dir: Optional[str] = None,
                   pretty_name: Optional[str] = None, license: str = "other", max_shard_size: str = "256MB",
                   rejects_path: Optional[str] = None, **push) -> str:
    """Build the folder ``data_dir`` and write ``output_dir`` (Parquet shards + dataset card); returns the folder."""
    builder = OwnData(data_dir=data_dir, cache_dir=cache_dir, rejects_path=rejects_path)
    card = {"pretty_name": pretty_name or os.path.basename(os.path.normpath(data_dir)), "license": license,
            "description": OwnData.DESCRIPTION,
            "notes": f"Built with `dataset_scripts.own_data` from a folder of `{METADATA_FILENAME}` / COCO "
                     f"`{COCO_FILENAME}` annotations; every row was checked, none was dropped."}
    return publish_built(builder, output_dir, card, max_shard_size=max_shard_size, **push)
