"""ReasonSeg (LISA; Lai et al., CVPR 2024) as an MRES dataset: one JSON of labelme polygons per image.

Read as LISA's own code reads it (``utils/data_processing.py: get_mask_from_json`` and ``utils/dataset.py:
ValDataset`` in github.com/dvlab-research/LISA): ``ReasonSeg/{train,val,test}/`` hold ``{name}.jpg`` and
``{name}.json`` side by side (only ``*.jpg`` is listed); a JSON file (UTF-8, else cp1252 as LISA falls back to)
has

- ``text``: the instructions (a list of strings; a single string is read as one),
- ``is_sentence``: true for a long, sentence-style query, false for a short phrase (LISA reports the test
  split's short and long queries apart),
- ``shapes``: labelme shapes ``{"label", "points": [[x, y], ...]}``.

LISA's quirks, kept: a shape labelled ``flag`` (any case) is a deprecated annotation and is skipped; the others
are painted largest first, so a smaller shape overwrites a larger one, a label containing ``ignore`` as the
ignore value (255, left out of both intersection and union when scoring) and any other label as target. The
target mask here is what ends as target. LISA's evaluation gives a model only the first ``text``; the
default config keeps that one (``all_texts`` keeps every one, for training).

Not held by the schema, and what is done about it:

- the ignore region: stored as background (the referent's mask is the target alone); every sample that has
  one is recorded as a fix in ``rejects.jsonl`` with its pixel count, and :data:`METRIC_CONVENTIONS` says how
  scores differ (a prediction there counts against a model here, not in LISA's figure);
- ``is_sentence``: the configs ``short`` and ``long`` build only short or only long queries, to reproduce
  LISA's two test columns;
- polygons are rasterised with pycocotools (COCO's rasteriser) where LISA uses OpenCV's ``fillPoly`` plus a
  one-pixel outline: masks may differ by a pixel along the border;
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
from .masks import decode_mask, encode_mask, mask_bbox, mask_from_polygons
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
    "source": f"{HOMEPAGE} (train_ds.py validate, utils/utils.py intersectionAndUnionGPU, utils/dataset.py ValDataset)",
    "headline": "gIoU and cIoU",
    "metrics": {
        "gIoU": "mean over samples of the per-sample IoU: our mIoU",
        "cIoU": "cumulative intersection over cumulative union over all samples: our oIoU",
    },
    "ignore_region": "pixels LISA labels ignore (255) are left out of intersection and union there; here they are "
                     "background, so a prediction covering them lowers our IoU: compare on samples without one "
                     "(rejects.jsonl lists the others) or expect our figure to be at most LISA's",
    "empty_target": "LISA scores a sample with an empty union as IoU 1 (no-object target); no such sample is built "
                    "here (skipped and logged)",
    "sentences": "LISA's evaluation uses the first text of each sample (the default config keeps only it)",
    "splits": "val (200) for model selection, test (779) reported overall and by is_sentence (configs short, long)",
    # the harness options (unires.evaluation.metrics.MRESMetricOptions) closest to LISA's evaluation
    "harness_options": {"resolution": "original", "empty_gt": "one_if_both_empty"},
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
        if not any(os.path.isdir(os.path.join(base, s)) for s in SPLITS) and os.path.isdir(os.path.join(base, "ReasonSeg")):
            base = os.path.join(base, "ReasonSeg")
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


def paint_shapes(shapes: list, height: int, width: int, json_path: str) -> tuple[np.ndarray, int]:
    """LISA's painting: skip ``flag`` shapes, paint the others largest first (target 1, ``ignore`` 255).

    Returns the target mask (bool) and the number of pixels that end as ignore.
    """
    painted = []
    for i, shape in enumerate(shapes):
        where = (json_path, "the sample", f"shapes[{i}]")
        if not isinstance(shape, dict) or not isinstance(shape.get("label"), str):
            raise RowError(*where[:2], f"shapes[{i}].label", "missing or not a string")
        label = shape["label"].lower()
        if label == "flag":  # LISA: "meaningless deprecated annotations"
            continue
        points = shape.get("points")
        try:
            flat = [float(v) for point in points for v in point]
            if len(flat) != 2 * len(points) or len(points) < 3:
                raise ValueError(f"{len(points)} points")
            mask = decode_mask(mask_from_polygons([flat], height, width))
        except (TypeError, ValueError) as err:
            raise RowError(*where[:2], f"shapes[{i}].points", f"expected at least 3 [x, y] points: {err}") from err
        painted.append((int(mask.sum()), i, mask, "ignore" in label))
    values = np.zeros((height, width), np.uint8)
    # largest first, so that a smaller shape inside a larger one wins (LISA sorts by area, descending)
    for _, _, mask, ignore in sorted(painted, key=lambda p: (-p[0], p[1])):
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
