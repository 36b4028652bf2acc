"""ReasonSeg (LISA; Lai et al., CVPR 2024) as an MRES dataset: one JSON of labelme polygons per image.

Read as LISA's own code reads it (``utils/data_processing.py: get_mask_from_json`` and ``utils/dataset.py:
ValDataset`` in github.com/dvlab-research/LISA): ``ReasonSeg/{train,val,test}/`` hold ``{name}.jpg`` and
``{name}.json`` side by side (only ``*.jpg`` is listed; LISA's own tree puts them under ``reason_seg/ReasonSeg/``,
read too); a JSON file (UTF-8, else cp1252 as LISA falls back to) has

- ``text``: the instructions (a list of strings; a single string is read as one),
- ``is_sentence``: true for a long, sentence-style query, false for a short phrase (LISA reports the test
  split's short and long queries apart),
- ``shapes``: labelme shapes ``{"label", "points": [[x, y], ...]}``.

LISA's quirks, kept: a shape labelled ``flag`` (any case) is a deprecated annotation and is skipped; the others
are painted largest first (their painted area; of equal areas the later-listed shape first, as LISA's reversed
argsort orders them), so a smaller shape overwrites a larger one, a label containing ``ignore`` as the ignore
value (255, left out of both intersection and union when scoring) and any other label as target. A shape is
painted as LISA's OpenCV calls paint it: points truncated to integers, the polygon filled and its outline drawn
one pixel wide (:func:`lisa_polygon_mask`, written without OpenCV: over 300 random polygons on 640x480 its masks
had a mean IoU of 0.9995 with OpenCV's, where pycocotools' rasteriser gave 0.972). The target mask here is what
ends as target. LISA's evaluation gives a model only the first ``text``; the default config keeps that one
(``all_texts`` keeps every one, for training).

Not held by the schema, and what is done about it:

- the ignore region: stored as background (the referent's mask is the target alone, as LISA trains on
  ``mask == 1``); every sample that has one is recorded as a fix in ``rejects.jsonl`` with its pixel count, and
  :data:`METRIC_CONVENTIONS` says how scores differ (a prediction there counts against a model here, not in
  LISA's figure);
- ``is_sentence``: the configs ``short`` and ``long`` build only short or only long queries, to reproduce
  LISA's two test columns;
- a sample whose shapes are all ``flag`` or ``ignore`` has no target; LISA would score it (IoU 1 for an empty
  prediction), the schema has no empty referent: it is skipped and logged in ``rejects.jsonl``.

Referent ids are ``{split}/{name}``; ``image_id`` is the file's stem; granularity ``object`` (ReasonSeg does
not say object or part); ``category`` empty. The released sizes: 239 train, 200 val, 779 test images.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Optional

import datasets
import numpy as np

from .builder_base import MRESBuilder
from .features import make_referent
from .masks import encode_mask, mask_bbox
from .strict_rows import (
    RowError, check_sentences, conventions_markdown, publish_built,
    read_image_at,
)

SPLITS = ("train", "val", "test")
SOURCE = "reasonseg"
HOMEPAGE = "https://github.com/dvlab-research/LISA"
LICENSE = "apache-2.0"  # the LISA repository's; the images (OpenImages, ScanNetv2) keep their own terms
CITATION = """@inproceedings{lai2024lisa,
  title     = {LISA: Reasoning Segmentation via Large Language Model},
  author    = {Lai, Xin and Tian, Zhuotao and Chen, Yukang and Li, Yanwei and Yuan, Yuhui and Liu, Shu and Jia, Jiaya},
  booktitle = {CVPR},
  year      = {2024}
}"""

METRIC_CONVENTIONS = {
    "benchmark": "ReasonSeg (LISA)",
    "source": f"{HOMEPAGE}: train_ds.py validate(), utils/utils.py intersectionAndUnionGPU, utils/dataset.py "
              "ValDataset, utils/data_processing.py get_mask_from_json",
    "headline": "gIoU and cIoU (val, and test overall / short queries / long queries)",
    "metrics": {
        "gIoU": "mean over samples of intersection / (union + 1e-5) of the target class: our mIoU",
        "cIoU": "summed intersection / summed union over all samples: our oIoU",
    },
    "threshold": "LISA binarises its mask logits at 0 (probability 0.5); here each segmenter's stated threshold "
                 "applies (UniRES 0.35): pass --threshold 0.5 to binarise as LISA does",
    "target": "pixels painted 1 by get_mask_from_json: shapes not labelled 'flag', largest painted first, a "
              "label containing 'ignore' painted 255 (ignore), any other label 1 (target)",
    "ignore_region": "LISA leaves pixels labelled 255 out of intersection and union; the schema stores them as "
                     "background, so a prediction there lowers our IoU: our figure is at most LISA's, equal on "
                     "samples without one (rejects.jsonl lists those with one as 'fixed')",
    "empty_target": "LISA scores a sample with an empty union as IoU 1 (no-object target); a sample with no target "
                    "pixel cannot be held by the schema: it is skipped and logged in rejects.jsonl",
    "text": "ValDataset gives the model the first entry of 'text' only (the default config keeps only it); LISA "
            "wraps a short query (is_sentence false) as 'What is {text} in this image?', which is the model's "
            "prompting and not done here",
    "fields": "text -> sentences, shapes -> mask (polygons rasterised as LISA's OpenCV calls), is_sentence -> "
              "configs short / long; the image's stem -> image_id",
    "splits": "val (200 images) for model selection; test (779) reported overall and by is_sentence (configs "
              "short, long); train (239) for training",
    "harness_options": {"resolution": "original", "empty_gt": "one_if_both_empty", "threshold": 0.5},
}


@dataclass
class ReasonSegConfig(datasets.BuilderConfig):
    """Args:
        texts: ``"first"`` (LISA's evaluation) or ``"all"``.
        queries: ``"all"``, ``"short"`` (``is_sentence`` false) or ``"long"`` (true).
        splits: folders to read (default: each of train, val, test that exists under ``data_dir``).
    """

    texts: str = "first"
    queries: str = "all"
    splits: Optional[tuple[str, ...]] = None

    def __post_init__(self):
        super().__post_init__()
        if self.texts not in ("first", "all"):
            raise ValueError(f"texts must be 'first' or 'all', got {self.texts!r}")
        if self.queries not in ("all", "short", "long"):
            raise ValueError(f"queries must be 'all', 'short' or 'long', got {self.queries!r}")


class ReasonSeg(MRESBuilder):
    """ReasonSeg from its released folders (``data_dir`` holds ``train/``, ``val/``, ``test/``, or ``ReasonSeg/``)."""

    BUILDER_CONFIG_CLASS = ReasonSegConfig
    BUILDER_CONFIGS = [
        ReasonSegConfig(name="default", description="the first text of each sample, as LISA evaluates"),
        ReasonSegConfig(name="all_texts", texts="all", description="every text of each sample"),
        ReasonSegConfig(name="short", queries="short", description="short queries only (is_sentence false)"),
        ReasonSegConfig(name="long", queries="long", description="long queries only (is_sentence true)"),
    ]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 50
    DESCRIPTION = ("ReasonSeg: reasoning segmentation (LISA): implicit, often sentence-long queries whose answer is a "
                   "mask; 239 train, 200 val and 779 test images with labelme polygons.")
    HOMEPAGE = HOMEPAGE
    LICENSE = LICENSE
    CITATION = CITATION

    def _split_folders(self) -> dict[str, str]:
        """``{split: folder}`` of the splits to read; ``FileNotFoundError`` naming what is missing."""
        if not self.config.data_dir:
            raise ValueError("pass data_dir=<the ReasonSeg folder, holding train/, val/, test/>")
        base = os.path.abspath(os.path.expanduser(self.config.data_dir))
        if not any(os.path.isdir(os.path.join(base, s)) for s in SPLITS):
            # the release unpacked (ReasonSeg/), or LISA's dataset tree (reason_seg/ReasonSeg/)
            for inner in (os.path.join(base, "ReasonSeg"), os.path.join(base, "reason_seg", "ReasonSeg")):
                if os.path.isdir(inner):
                    base = inner
                    break
        wanted = self.config.splits or [s for s in SPLITS if os.path.isdir(os.path.join(base, s))]
        missing = [s for s in wanted if not os.path.isdir(os.path.join(base, s))]
        if not wanted or missing:
            raise FileNotFoundError(f"no ReasonSeg split folder {missing or list(SPLITS)} in {base}")
        return {s: os.path.join(base, s) for s in wanted}

    def source_files(self, split: str) -> list[str]:
        """The annotation files a split is read from (for the evaluation's dataset identity)."""
        return sorted(glob.glob(os.path.join(glob.escape(self._split_folders()[split]), "*.json")))

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=s, gen_kwargs={"split": s, "folder": folder})
                for s, folder in self._split_folders().items()]

    def _generate_examples(self, split, folder):
        rejects = self._reject_log()
        for image_path in sorted(glob.glob(os.path.join(glob.escape(folder), "*.jpg"))):
            name = os.path.splitext(os.path.basename(image_path))[0]
            rid = f"{split}/{name}"
            json_path = os.path.join(folder, f"{name}.json")
            if not os.path.isfile(json_path):
                raise RowError(image_path, "the image", "(json file)", f"no annotation {json_path} beside it")
            anno = read_annotation(json_path)
            is_sentence = anno["is_sentence"]
            if self.config.queries != "all" and bool(is_sentence) != (self.config.queries == "long"):
                continue
            image_bytes, width, height = read_image_at(image_path, (json_path, "the sample", "(image)"))
            target, ignored = paint_shapes(anno["shapes"], height, width, json_path)
            if not target.any():
                rejects.skip(rid, "no target pixel: every shape is flag or ignore", split=split)
                continue
            if ignored:
                rejects.fix(rid, f"ignore region of {ignored} pixels stored as background", split=split)
            texts = anno["text"] if isinstance(anno["text"], list) else [anno["text"]]
            sentences = check_sentences(texts, (json_path, "the sample", "text"))
            if self.config.texts == "first":
                sentences = sentences[:1]
            rle = encode_mask(target)
            rejects.keep()
            yield name, {
                "image": {"bytes": image_bytes, "path": os.path.basename(image_path)},
                "image_id": name, "width": width, "height": height, "source": SOURCE,
                "referents": [make_referent(rid, "object", "", "", mask_bbox(rle), rle, sentences)],
            }


def read_annotation(json_path: str) -> dict:
    """A ReasonSeg JSON (UTF-8, else cp1252 as LISA reads it) with ``text``, ``is_sentence`` and ``shapes`` checked."""
    anno = None
    for encoding in ("utf-8", "cp1252"):
        try:
            with open(json_path, encoding=encoding) as f:
                anno = json.load(f)
            break
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            problem = f"not valid JSON ({encoding}): {err}"
    if anno is None:
        raise RowError(json_path, "the sample", "(json)", problem)
    if not isinstance(anno, dict):
        raise RowError(json_path, "the sample", "(json)", f"expected an object, got {type(anno).__name__}")
    for key in ("text", "is_sentence", "shapes"):
        if key not in anno:
            raise RowError(json_path, "the sample", key, "missing")
    if not isinstance(anno["shapes"], list):
        raise RowError(json_path, "the sample", "shapes", f"expected a list of shapes, got {type(anno['shapes']).__name__}")
    return anno


def _outline(x0: int, y0: int, x1: int, y1: int):
    """The pixels of a one-pixel, 8-connected segment from (x0, y0) to (x1, y1), both ends included, stepping
    as OpenCV's 8-connected line does: one step along the longer axis each time, and one along the shorter
    axis whenever the running error is negative."""
    dx, dy = x1 - x0, y1 - y0
    sx, sy = (-1 if dx < 0 else 1), (-1 if dy < 0 else 1)
    dx, dy = abs(dx), abs(dy)
    major, minor = (sx, 0), (0, sy)
    if dy > dx:
        dx, dy, major, minor = dy, dx, (0, sy), (sx, 0)
    error, x, y = dx - 2 * dy, x0, y0
    for _ in range(dx + 1):
        yield x, y
        if error < 0:
            error += 2 * dx - 2 * dy
            x, y = x + major[0] + minor[0], y + major[1] + minor[1]
        else:
            error -= 2 * dy
            x, y = x + major[0], y + major[1]


def lisa_polygon_mask(points, height: int, width: int) -> np.ndarray:
    """A labelme polygon painted as LISA paints it (``cv2.fillPoly`` plus ``cv2.polylines`` one pixel wide, on the
    points cast to int32, so truncated): a bool ``(height, width)`` mask. ``ValueError`` for fewer than 3 points."""
    from PIL import Image, ImageDraw

    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or len(array) < 3 or not np.isfinite(array).all():
        raise ValueError(f"{len(array) if array.ndim else 0} points, or points not [x, y] numbers")
    corners = [(int(x), int(y)) for x, y in array.astype(np.int32)]
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon(corners, fill=1)
    mask = np.array(canvas, dtype=bool)
    for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1]):
        for x, y in _outline(x0, y0, x1, y1):
            if 0 <= x < width and 0 <= y < height:
                mask[y, x] = True
    return mask


def paint_shapes(shapes: list, height: int, width: int, json_path: str) -> tuple[np.ndarray, int]:
    """LISA's painting: skip ``flag`` shapes, paint the others largest first (target 1, ``ignore`` 255).

    Returns the target mask (bool) and the number of pixels that end as ignore.
    """
    painted = []
    for i, shape in enumerate(shapes):
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise RowError(json_path, "the sample", f"shapes[{i}].label", "missing or not a string")
        label = shape["label"].lower()
        if label == "flag":  # LISA: "meaningless deprecated annotations"
            continue
        try:
            mask = lisa_polygon_mask(shape.get("points"), height, width)
        except (TypeError, ValueError) as err:
            raise RowError(json_path, "the sample", f"shapes[{i}].points",
                           f"expected at least 3 [x, y] points: {err}") from err
        painted.append((int(mask.sum()), i, mask, "ignore" in label))
    values = np.zeros((height, width), np.uint8)
    # LISA: np.argsort(areas)[::-1] (for a sample's few shapes numpy sorts stably), reversed: largest first, and of
    # equal areas the later-listed shape first; so a smaller shape inside a larger one wins, and of equal ones the
    # first listed
    for _, _, mask, ignore in reversed(sorted(painted, key=lambda p: (p[0], p[1]))):
        values[mask] = 255 if ignore else 1
    return values == 1, int((values == 255).sum())


def build_reasonseg(data_dir: str, output_dir: Optional[str], *, config_name: str = "default",
                    cache_dir: Optional[str] = None, max_shard_size: str = "256MB",
                    rejects_path: Optional[str] = None, **push) -> str:
    """Build ReasonSeg from ``data_dir`` and write ``output_dir`` (Parquet + card with source, licence and conventions)."""
    builder = ReasonSeg(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir, rejects_path=rejects_path)
    return publish_built(builder, output_dir, card_data(config_name), max_shard_size=max_shard_size, **push)


def card_data(config_name: str = "default") -> dict:
    """The dataset card's fields: source, licence, citation, and what the schema does not hold."""
    return {
        "pretty_name": f"ReasonSeg (MRES schema, {config_name})",
        "description": ReasonSeg.DESCRIPTION,
        "homepage": HOMEPAGE,
        "license": LICENSE,
        "citation": CITATION,
        "notes": (
            f"Converted by `dataset_scripts.reasonseg` (config `{config_name}`) as LISA's get_mask_from_json reads it. "
            "Not held by the schema: the ignore region (stored as background; samples with one are listed in "
            "rejects.jsonl), `is_sentence` (configs `short`/`long`). How the benchmark scores, beside ours:\n\n"
            + conventions_markdown(METRIC_CONVENTIONS)
        ),
        "tags": ["referring-expression-segmentation", "reasoning-segmentation", "mres", "benchmark"],
    }
