"""Stage 1, input: a COCO/Objects365-format detection manifest into records, and the images opened.

:func:`read_detection_manifest` reads the JSON once, before sharding (the runner shards the
sorted records it returns). :class:`LoadImages` is the first stage of every batch: it opens each
image and rejects the ones that are missing or corrupt.
"""

from __future__ import annotations

import io
import json
import os
import re
from array import array
from typing import Any, Callable, Iterable, Iterator

from PIL import Image, UnidentifiedImageError

from dataset_scripts.rejects import RejectLog

from ..errors import EngineInputError, item_name
from ..records import image_path, object_referent_id
from .base import Reject, StageOutput


def _clip_box(bbox, width: int, height: int) -> list[float]:
    """``[x, y, w, h]`` clipped to the image; a box side inside the image is kept exactly as given.

    (Computing ``(x + w) - x`` for a box that needs no clipping differs from ``w`` by a rounding
    error, which would record most float boxes as "clipped".)
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


CROWD_REASON = "crowd box: iscrowd=1 marks a group of objects (COCO), not one object"


def _is_crowd(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true")
    return bool(value)


class _Boxes:
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
        import numpy as np

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
        import numpy as np

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

    def records(self, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
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
                clipped = _clip_box(given, width, height)
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
            yield {
                "image_id": image_id,
                "file_name": file_name,
                "width": width,
                "height": height,
                "source": self.source,
                "boxes": boxes,
                "referents": [],
            }


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
    import ijson

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
    from ijson.backends import python as python_backend

    with open(path, "rb") as f:
        try:
            for number, item in enumerate(python_backend.items(f, prefix, use_float=True, buf_size=1 << 16)):
                if number >= yielded:
                    yield item
        except ijson.JSONError as err:
            raise _not_json(path, err) from None


def _has_key(path: str, key: str) -> bool:
    import ijson
    from ijson.backends import python as python_backend

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
) -> _Boxes:
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
        boxes = _Boxes(name, image_dir, rejects, source)
        boxes.add_categories(data["categories"])
        boxes.add_images(data["images"])
        boxes.add_annotations(data.get("annotations", []))
        return boxes
    name = os.fspath(annotations_json)
    boxes = _Boxes(name, image_dir, rejects, source)
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
) -> list[dict[str, Any]]:
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


# EXIF orientation -> the transpose that shows the photo upright (as PIL.ImageOps.exif_transpose does).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def orient_box(bbox, orientation: int, width: int, height: int) -> list[float]:
    """An ``[x, y, w, h]`` box of the stored ``width`` x ``height`` pixels, in the frame EXIF ``orientation`` shows upright."""
    x, y, w, h = (float(v) for v in bbox)
    corners = [(x, y), (x + w, y + h)]
    maps = {
        2: lambda u, v: (width - u, v),
        3: lambda u, v: (width - u, height - v),
        4: lambda u, v: (u, height - v),
        5: lambda u, v: (v, u),
        6: lambda u, v: (height - v, u),
        7: lambda u, v: (height - v, width - u),
        8: lambda u, v: (v, width - u),
    }
    (ax, ay), (bx, by) = (maps[orientation](u, v) for u, v in corners)
    x0, y0 = min(ax, bx), min(ay, by)
    return [x0, y0, max(ax, bx) - x0, max(ay, by) - y0]


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels for the stages; 16-bit greyscale (``I;16``, ``I``: 0..65535) is scaled to 8 bits, not clipped at 255."""
    if image.mode in _SIXTEEN_BIT_MODES:
        import numpy as np

        values = np.asarray(image).astype(np.int64)
        grey = np.clip((values + 128) // 257, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def _error_text(err: Exception) -> str:
    # PIL names the BytesIO it read ("<_io.BytesIO object at 0x7f...>"): the same file must give the same reason.
    return re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the image bytes", str(err)) or type(err).__name__


def _upright_bytes(image: Image.Image, upright: Image.Image) -> bytes:
    """The upright pixels encoded again, without the EXIF orientation tag: JPEG (quality 95, the file's
    chroma subsampling and ICC profile) for a JPEG, else PNG (lossless)."""
    exif = image.getexif()
    exif.pop(_EXIF_ORIENTATION_TAG, None)
    buffer = io.BytesIO()
    extra = {"exif": exif.tobytes()} if len(exif) else {}
    if image.info.get("icc_profile"):
        extra["icc_profile"] = image.info["icc_profile"]
    if image.format == "JPEG":
        from PIL import JpegImagePlugin

        subsampling = JpegImagePlugin.get_sampling(image)
        upright.save(buffer, "JPEG", quality=95, **({"subsampling": subsampling} if subsampling >= 0 else {}), **extra)
    else:
        upright.save(buffer, "PNG", **extra)
    return buffer.getvalue()


class LoadImages:
    """Open each record's image as RGB (``"_image"``) and keep the bytes to store (``"_image_bytes"``).

    A missing, unreadable or corrupt image is a :class:`Reject` of the whole image (its reason
    names the file, never a memory address). The size in the manifest is checked against the
    file; a difference is corrected to the file's size and the boxes are clipped to it (noted in
    ``"_fixes"``), since masks must have the file's size; a box left with no area is a
    :class:`Reject` of its object referent id.

    Photos are made upright (:attr:`definition`): an image with an EXIF orientation is turned
    as ``datasets``' ``Image`` feature and every viewer turn it, its boxes (given, as COCO and
    Objects365 give them, in the stored pixel frame: the manifest's width and height are the
    stored ones) are turned with it, and it is stored upright without the orientation tag (noted
    in ``"_fixes"``), so that the masks, the stored image and what ``load_dataset`` decodes agree.
    When the manifest's size is the upright one instead, its boxes are taken as upright already.
    16-bit greyscale images are scaled to 8 bits for the stages (and stored as they are).
    """

    name = "load_images"
    definition = (
        "images are stored upright: a photo with an EXIF orientation is turned as datasets and viewers turn it, "
        "its detection boxes (given in the stored pixel frame, as in COCO and Objects365) are turned with it, and "
        "it is stored re-encoded without the orientation tag (JPEG at quality 95, other formats as PNG), so masks, "
        "boxes and the decoded image share one frame; 16-bit images are scaled to 8 bits for the models"
    )

    def __init__(self, image_root: str | os.PathLike | None = None):
        self.image_root = image_root

    def __call__(self, records: list[dict]) -> StageOutput:
        out = StageOutput()
        for record in records:
            path = image_path(record, self.image_root)
            try:
                with open(path, "rb") as f:
                    data = f.read()
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
                    orientation = img.getexif().get(_EXIF_ORIENTATION_TAG)
                    orientation = orientation if orientation in _EXIF_TRANSPOSE else None
                    image = to_rgb(img)
                    stored_bytes = data
                    if orientation is not None:
                        stored_bytes = _upright_bytes(img, img.transpose(_EXIF_TRANSPOSE[orientation]))
            except FileNotFoundError:
                out.rejects.append(Reject(record["image_id"], self.name, f"missing image: {path}"))
                continue
            except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
                out.rejects.append(Reject(record["image_id"], self.name, f"corrupt image: {path}: {_error_text(err)}"))
                continue
            record = dict(record)
            fixes = list(record.get("_fixes") or [])
            stored = (image.width, image.height)
            upright_given = (orientation in (5, 6, 7, 8) and stored != stored[::-1]
                             and (record["width"], record["height"]) == stored[::-1])
            if orientation is not None and upright_given:
                image = image.transpose(_EXIF_TRANSPOSE[orientation])  # the manifest's boxes are upright already
                fixes.append(f"EXIF orientation {orientation} applied: stored upright; the manifest's size and boxes are upright already")
            if (image.width, image.height) != (record["width"], record["height"]):
                fixes.append(f"size {record['width']}x{record['height']} in the manifest, {image.width}x{image.height} in the file")
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
            if orientation is not None and not upright_given:
                width, height = image.width, image.height
                image = image.transpose(_EXIF_TRANSPOSE[orientation])
                record["boxes"] = [{**box, "bbox": orient_box(box["bbox"], orientation, width, height)} for box in record["boxes"]]
                record["width"], record["height"] = image.width, image.height
                fixes.append(f"EXIF orientation {orientation} applied: stored upright, boxes turned with the pixels")
            if fixes:
                record["_fixes"] = fixes
            record["_image"] = image
            record["_image_bytes"] = stored_bytes
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
