"""The detection manifest reader: a COCO/Objects365 detection JSON into :class:`~mres_engine.records.ImageRecord`\ s.

It runs once, in the driver, before sharding (:mod:`mres_engine.readers.manifest` cuts what it reads into
one input file per shard). The JSON is read streaming (``ijson``): no JSON tree and no record list is held,
only the boxes in typed arrays (:class:`DetectionBoxes`); every box it skips or clips is accounted for in
a :class:`~run_support.rejects.RejectLog`.
"""

from __future__ import annotations

import os
from array import array
from typing import Any, Callable, Iterable, Iterator

import ijson
import numpy as np
from ijson.backends import python as python_backend

from run_support.rejects import RejectLog

from ..errors import EngineInputError, item_name
from ..records import ImageRecord, clip_box


CROWD_REASON = "crowd box: iscrowd=1 marks a group of objects (COCO), not one object"


def _is_crowd(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true")
    return bool(value)


class DetectionBoxes:
    """Every image and box of a detection manifest in typed arrays, read streaming (no JSON tree is held).

    Per image (about 90 bytes): its id (int64 while every id is an integer, else a string), its
    ``file_name`` in one UTF-8 buffer, its size; per box (about 50 bytes): its image (int32),
    category (uint16), the bbox as given (4 float64) and the annotation id (int64 while every id
    is an integer, else a string). Boxes are grouped by image with a counting sort (an int32 per
    box) after reading. Decisions that need an image's boxes together
    (clipping, no area, repeated ids) are taken while :meth:`records` yields the records.
    """

    def __init__(self, name: str, image_dir, rejects: RejectLog, source: str):
        self.name = name
        self.image_dir = os.fspath(image_dir) if image_dir is not None else None
        self.rejects = rejects
        self.source = source
        self.categories: dict[Any, int] = {}  # category id as given -> index into category_names
        self.category_names: list[str] = []
        # Images, sorted by id as strings: the ids as integers (array) while every id is one, else as
        # strings; file names in one UTF-8 buffer with offsets (no Python object per image).
        self._int_ids: array | None = array("q")
        self._str_ids: list[str] | None = None
        self._names = b""
        self._name_offsets = array("q", [0])
        self._file_index = array("q")
        self.widths = array("q")
        self.heights = array("q")
        self.box_image = array("i")
        self.box_category = array("H")
        self.box_bbox = array("d")
        self.box_ids: array | list[str] = array("q")
        self._offsets = None
        self._order = None

    def _missing(self, section: str, index: int, item, key: str) -> EngineInputError:
        if not isinstance(item, dict):
            return EngineInputError(self.name, f"not an object but {type(item).__name__}", item=item_name(section, index))
        return EngineInputError(self.name, "missing", item=item_name(section, index, item.get("id") if key != "id" else None), key=key)

    def add_categories(self, categories: Iterable[dict]) -> None:
        for index, category in enumerate(categories):
            try:
                key, name = category["id"], category["name"]
            except (KeyError, TypeError) as err:
                raise self._missing("categories", index, category, err.args[0] if isinstance(err, KeyError) else "id") from None
            if key in self.categories:  # a repeated id: the last name wins (as a dict built from the list)
                self.category_names[self.categories[key]] = name
            else:
                self.categories[key] = len(self.category_names)
                self.category_names.append(name)

    def add_images(self, images: Iterable[dict]) -> None:
        raw_ids, names, offsets, widths, heights = array("q"), bytearray(), array("q", [0]), array("q"), array("q")
        str_ids: list[str] | None = None
        for index, image in enumerate(images):
            try:
                image_id, file_name = image["id"], image["file_name"]
                widths.append(int(image["width"]))
                heights.append(int(image["height"]))
            except KeyError as err:
                raise self._missing("images", index, image, err.args[0]) from None
            except TypeError:  # not an object
                raise self._missing("images", index, image, "id") from None
            if str_ids is None and type(image_id) is int and -2**63 <= image_id < 2**63:
                raw_ids.append(image_id)
            else:
                if str_ids is None:  # the first id that is not an integer: ids become strings
                    str_ids, raw_ids = [str(v) for v in raw_ids], array("q")
                str_ids.append(str(image_id))
            names += file_name.encode("utf-8", "surrogatepass")
            offsets.append(len(names))
        # Sorted by id as a string (as records are sharded): the decimal digits as bytes sort as str does.
        if str_ids is None:
            ids = np.frombuffer(raw_ids, dtype=np.int64) if raw_ids else np.zeros(0, np.int64)
            order = np.argsort(ids.astype("S20"), kind="stable")
            self._int_ids, self._str_ids = array("q", ids[order].tobytes()), None
            del ids
            sorted_ids = self._int_ids
        else:
            order = np.asarray(sorted(range(len(str_ids)), key=str_ids.__getitem__), dtype=np.int64)
            self._int_ids, self._str_ids = None, [str_ids[i] for i in order]
            sorted_ids = self._str_ids
        repeated = next((sorted_ids[i] for i in range(1, len(sorted_ids)) if sorted_ids[i] == sorted_ids[i - 1]), None)
        if repeated is not None:
            raise EngineInputError(self.name, f"image id {repeated} appears twice in 'images'")
        # File names stay in file order (no copy): image i's is name number _file_index[i].
        self._names, self._name_offsets = bytes(names), offsets
        self._file_index = array("q", order.tobytes())
        self.widths = array("q", np.frombuffer(widths, dtype=np.int64)[order].tobytes()) if len(widths) else array("q")
        self.heights = array("q", np.frombuffer(heights, dtype=np.int64)[order].tobytes()) if len(heights) else array("q")

    def image_id(self, i: int) -> str:
        return str(self._int_ids[i]) if self._int_ids is not None else self._str_ids[i]

    def file_name(self, i: int) -> str:
        k = self._file_index[i]
        return self._names[self._name_offsets[k] : self._name_offsets[k + 1]].decode("utf-8", "surrogatepass")

    def _image_index(self) -> Callable[[Any], int | None]:
        """``image_id`` as an annotation gives it -> the image's index, matched as strings (10 and "10" are one image)."""
        if self._str_ids is not None:
            index_of = {image_id: i for i, image_id in enumerate(self._str_ids)}
            return lambda value: index_of.get(str(value))
        ids = self._int_ids
        low, high = (min(ids), max(ids)) if ids else (0, -1)
        if high - low < 4 * len(ids) + 1024:  # dense ids (COCO, Objects365): a table, 4 bytes per id
            table = array("i", [-1]) * (high - low + 1)
            for i, image_id in enumerate(ids):
                table[image_id - low] = i
            def lookup(key: int) -> int | None:
                found = table[key - low] if low <= key <= high else -1
                return found if found >= 0 else None
        else:
            index_of = {image_id: i for i, image_id in enumerate(ids)}
            lookup = index_of.get

        def index(value) -> int | None:
            if type(value) is int:
                return lookup(value)
            if type(value) is str and value.lstrip("-").isdigit():  # "10" names image 10, "010" does not
                key = int(value)
                return lookup(key) if str(key) == value else None
            return None

        return index

    def add_annotations(self, annotations: Iterable[dict]) -> None:
        """Read the boxes; those of an unknown image or category, and crowd boxes, are skipped here (file order)."""
        image_index = self._image_index()
        rejects = self.rejects
        if len(self.category_names) > 65535 and self.box_category.typecode == "H":
            self.box_category = array("i", self.box_category)
        for number, ann in enumerate(annotations):
            if not isinstance(ann, dict):
                raise self._missing("annotations", number, ann, "id")
            box_id = ann.get("id")
            image = image_index(ann.get("image_id"))
            if image is None:
                image_id = str(ann.get("image_id"))
                rejects.skip(str(box_id), f"box of an unknown image: {image_id}", image_id=image_id)
                continue
            try:
                category = self.categories.get(ann.get("category_id"))
            except TypeError:  # an unhashable category id names no category
                category = None
            if category is None:
                rejects.skip(str(box_id), f"box of an unknown category: {ann.get('category_id')}", image_id=self.image_id(image))
                continue
            if _is_crowd(ann.get("iscrowd")):
                rejects.skip(str(box_id), CROWD_REASON, image_id=self.image_id(image))
                continue
            if "bbox" not in ann:
                raise self._missing("annotations", number, ann, "bbox")
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (TypeError, ValueError):
                raise EngineInputError(self.name, f"{str(ann['bbox'])[:40]} is not 4 numbers [x, y, w, h]",
                                       item=item_name("annotations", number, box_id), key="bbox") from None
            self.box_image.append(image)
            self.box_category.append(category)
            self.box_bbox.extend((x, y, w, h))
            if isinstance(self.box_ids, array) and type(box_id) is int and -2**63 <= box_id < 2**63:
                self.box_ids.append(box_id)
            else:
                if isinstance(self.box_ids, array):  # the first id that is not an integer: ids become strings
                    self.box_ids = [str(v) for v in self.box_ids]
                self.box_ids.append(str(box_id))

    def _group(self) -> None:
        # Boxes grouped by image, in file order within an image: a counting sort, chunk by chunk, so
        # that no temporary grows beyond a chunk (np.argsort over all boxes would hold 8 bytes per box).
        num_boxes = len(self.box_image)
        box_image = np.frombuffer(self.box_image, dtype=np.int32) if num_boxes else np.zeros(0, np.int32)
        counts = np.bincount(box_image, minlength=len(self))
        offsets = np.zeros(len(self) + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        order = np.empty(num_boxes, np.int32)
        cursor = offsets[:-1].copy()
        chunk = 1 << 13
        for start in range(0, num_boxes, chunk):
            images = box_image[start : start + chunk]
            local = np.argsort(images, kind="stable")
            images = images[local]
            run_starts = np.flatnonzero(np.r_[True, images[1:] != images[:-1]])
            run_lengths = np.diff(np.r_[run_starts, len(images)])
            rank = np.arange(len(images)) - np.repeat(run_starts, run_lengths)
            order[cursor[images] + rank] = start + local
            cursor[images[run_starts]] += run_lengths
        del box_image
        self._offsets, self._order = offsets, order

    def __len__(self) -> int:
        return len(self.widths)

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[ImageRecord]:
        """The records of images ``start:stop`` (sorted by id as strings), each box clipped or skipped as it is met.

        A box is accounted for here: clipped to the image (:meth:`RejectLog.fix`), skipped when no
        area is left or when an earlier box of the image has its id (its referent id would repeat),
        or kept (:meth:`RejectLog.keep`). Boxes are sorted by id as strings, file order among equals.
        """
        if self._order is None:
            self._group()
        stop = len(self) if stop is None else stop
        rejects, bbox, ids = self.rejects, self.box_bbox, self.box_ids
        for i in range(start, stop):
            image_id, width, height, file_name = self.image_id(i), self.widths[i], self.heights[i], self.file_name(i)
            if self.image_dir is not None and not os.path.isabs(file_name):
                file_name = os.path.join(self.image_dir, file_name)
            found = self._order[self._offsets[i] : self._offsets[i + 1]].tolist()
            found = sorted(((str(ids[k]), k) for k in found), key=lambda pair: pair[0])
            boxes, previous = [], None
            for box_id, k in found:
                given = bbox[4 * k : 4 * k + 4].tolist()
                clipped = clip_box(given, width, height)
                if clipped[2] <= 0 or clipped[3] <= 0:
                    rejects.skip(box_id, "box with no area inside the image", image_id=image_id, bbox=given)
                    continue
                if box_id == previous:
                    rejects.skip(box_id, f"repeated annotation id: image {image_id} has another box {box_id}", image_id=image_id,
                                 bbox=given)
                    continue
                if clipped != given:
                    rejects.fix(box_id, "box clipped to the image", image_id=image_id, bbox=given, clipped=clipped)
                rejects.keep()
                previous = box_id
                boxes.append({"box_id": box_id, "bbox": clipped, "category": self.category_names[self.box_category[k]]})
            yield ImageRecord(image_id, file_name, width, height, self.source, boxes)


COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip (gunzip it)", b"BZh": "bzip2 (bunzip2 it)", b"\xfd7zXZ": "xz (unxz it)",
                    b"PK\x03\x04": "zip (unzip it)", b"\x28\xb5\x2f\xfd": "zstd (unzstd it)"}


def _not_json(path: str, err: Exception) -> EngineInputError:
    """The one-line error for a file ijson cannot parse; a compressed file is named as such."""
    with open(path, "rb") as f:
        head = f.read(8)
    for magic, what in COMPRESSED_MAGIC.items():
        if head.startswith(magic):
            return EngineInputError(path, f"a compressed file, not JSON: {what.split(' ')[0]}; decompress it first "
                                          f"{what[what.index('('):]}")
    message = err.args[0] if err.args else err
    if isinstance(message, bytes):  # yajl's messages come as bytes
        message = message.decode("utf-8", "replace")
    first = " ".join(str(message).strip().split("\n")[0].split()) or type(err).__name__
    return EngineInputError(path, f"not valid JSON: {first}")


def _stream(path: str, prefix: str) -> Iterator[Any]:
    """The items under ``prefix``, parsed by ijson's fastest backend (yajl2_c where installed).

    yajl parses no integer beyond 64 bits; where one occurs, the pure-Python backend takes over
    from the item where the first stopped (every item is yielded once, in file order).
    """
    yielded = 0
    try:
        with open(path, "rb") as f:
            for item in ijson.items(f, prefix, use_float=True, buf_size=1 << 16):
                yield item
                yielded += 1
        return
    except ijson.JSONError as err:
        if "integer overflow" not in str(err) or ijson.backend == "python":
            raise _not_json(path, err) from None
    with open(path, "rb") as f:
        try:
            for number, item in enumerate(python_backend.items(f, prefix, use_float=True, buf_size=1 << 16)):
                if number >= yielded:
                    yield item
        except ijson.JSONError as err:
            raise _not_json(path, err) from None


def _has_key(path: str, key: str) -> bool:
    for backend in (ijson, python_backend):
        with open(path, "rb") as f:
            try:
                return any(p == "" and e == "map_key" and v == key for p, e, v in backend.parse(f))
            except ijson.JSONError as err:
                if "integer overflow" not in str(err) or backend is python_backend:
                    raise _not_json(path, err) from None
    return False


def stream_detection_manifest(
    annotations_json: str | os.PathLike | dict,
    image_dir: str | os.PathLike | None = None,
    rejects: RejectLog | None = None,
    source: str = "detections",
) -> DetectionBoxes:
    """A COCO/Objects365 detection JSON read streaming (``ijson``) into typed arrays; ``.records()`` yields its records.

    The file is read three times (categories, images, annotations), so that the keys may come in
    any order (COCO files may list ``annotations`` before ``images``) and no JSON tree is held:
    peak memory is about 60 bytes per box plus about 250 per image. ``len()`` is the number of
    images. See :func:`read_detection_manifest` for the records and the accounting.
    """
    rejects = rejects if rejects is not None else RejectLog(stage="input")
    if isinstance(annotations_json, dict):
        data, name = annotations_json, "<dict>"
        for key in ("images", "categories"):
            if key not in data:
                raise EngineInputError(name, "missing (a detection file needs images and categories lists)", key=key)
        boxes = DetectionBoxes(name, image_dir, rejects, source)
        boxes.add_categories(data["categories"])
        boxes.add_images(data["images"])
        boxes.add_annotations(data.get("annotations", []))
        return boxes
    name = os.fspath(annotations_json)
    boxes = DetectionBoxes(name, image_dir, rejects, source)
    boxes.add_categories(_stream(name, "categories.item"))
    boxes.add_images(_stream(name, "images.item"))
    if not len(boxes) or not boxes.category_names:
        for key in ("images", "categories"):
            if not _has_key(name, key):
                raise EngineInputError(name, "missing (a detection file needs images and categories lists)", key=key)
    boxes.add_annotations(_stream(name, "annotations.item"))
    return boxes


def read_detection_manifest(
    annotations_json: str | os.PathLike | dict,
    image_dir: str | os.PathLike | None = None,
    rejects: RejectLog | None = None,
    source: str = "detections",
) -> list[ImageRecord]:
    """Records (sorted by ``image_id`` as strings) from COCO/Objects365 detection JSON.

    Args:
        annotations_json: the JSON file (or its parsed dict) with ``images`` (``id``,
            ``file_name``, ``width``, ``height``), ``annotations`` (``id``, ``image_id``,
            ``bbox`` as ``[x, y, w, h]``, ``category_id``, optional ``iscrowd``) and
            ``categories`` (``id``, ``name``), in any order.
        image_dir: the folder ``file_name`` is relative to; when given, ``file_name`` in each
            record is made absolute so that records need no other context.
        rejects: where boxes are accounted for: a box reaching outside the image is clipped and
            recorded with :meth:`RejectLog.fix`; a box with no area after clipping, naming an
            unknown image or category, marked ``iscrowd`` (a crowd region is a group of objects,
            not one: reason ``"crowd box"``), or repeating the annotation id of an earlier box of
            its image (its referent id would repeat: reason ``"repeated annotation id"``) is
            recorded with :meth:`RejectLog.skip`. ``None`` keeps a log in memory only.
        source: the ``source`` column of every row (e.g. ``"objects365"``).

    The whole list is returned; the runner writes the shards from :func:`stream_detection_manifest`
    without holding it.

    Raises:
        EngineInputError: (a ``ValueError``) the JSON is malformed or lacks a required key (the
            message names the file, the item and the key), or an image id appears twice.
    """
    return list(stream_detection_manifest(annotations_json, image_dir, rejects, source).records())
