"""GroundingSuite-Eval (GSEval; Hu et al., ICCV 2025) as an MRES dataset: one JSONL, COCO RLE masks, scored by gIoU.

Read as the benchmark's own evaluator reads it (``evaluate_grounding.py`` and ``GroundingSuite-Eval.jsonl``
in github.com/hustvl/GroundingSuite, the release also at huggingface.co/datasets/hustvl/GSEval): one JSON
object per line, one referring expression each::

    {"idx": 0, "image_path": "unlabeled2017/000000000267.jpg", "class_id": 1,
     "label": "a trail of white smoke", "caption": "A trail of white smoke follows the plane, ...",
     "box": [x_min, y_min, x_max, y_max], "segmentation": {"size": [h, w], "counts": "..."}}

- ``image_path`` is relative to the image folder (their ``--image_dir``, default ``.``; their README unzips the COCO
  ``unlabeled2017`` images into ``./images``, so ``data_dir/images/`` is read when ``data_dir/unlabeled2017/`` is
  not there); lines on one image become one row, ``image_id`` is the file's stem (``000000000267``), ``source`` is
  ``coco-unlabeled2017``;
- ``caption`` (a sentence) is the referent's sentence by default, ``label`` (the short noun phrase) is stored as
  ``category``; their evaluator gives no prompt (it compares masks by ``idx``), so which one a model is given is
  the caller's choice: config ``label`` makes the label the sentence;
- ``class_id``: 1 stuff, 2 part, 3 multiple objects, 4 single object (the benchmark reports gIoU per class).
  Class 2 becomes granularity ``part`` (its object is not annotated: ``parent_id`` null, ``object_category``
  empty), the others ``object``. The schema has no class field: the class name starts the referent id,
  ``{class}/{idx}`` (``stuff/0``), so that per-class scores can be recovered (:func:`class_of_referent`);
- ``box`` is ``[x_min, y_min, x_max, y_max]`` (a detector's box, not the mask's); stored as ``[x, y, w, h]``;
- ``segmentation`` is a compressed COCO RLE of the image's size.

The release (commit ff3ea30 of the repository) has 3,715 lines on 2,727 images (1,011 stuff, 455 part,
769 multi, 1,480 single); the paper rounds to 3,800. One split, ``test``. A bad line (missing key, mask not
of the image's size, empty mask, missing image, duplicate ``idx``) stops the build with an error naming the
file, the line and the key.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import datasets

from .builder_base import MRESBuilder
from .coco_common import checked_bbox
from .features import make_referent
from .masks import mask_bbox
from .strict_rows import (
    RowError, check_sentences, conventions_markdown, jsonl_records, mask_from_any,
    publish_built, read_image_at,
)

JSONL_FILENAME = "GroundingSuite-Eval.jsonl"
SOURCE = "coco-unlabeled2017"
CLASS_NAMES = {1: "stuff", 2: "part", 3: "multi", 4: "single"}
REQUIRED_KEYS = ("idx", "image_path", "segmentation")
TEXT_FIELDS = ("caption", "label")

HOMEPAGE = "https://github.com/hustvl/GroundingSuite"
LICENSE = "apache-2.0"  # the repository's; the images are COCO's (unlabeled2017), under their own terms
CITATION = """@inproceedings{hu2025groundingsuite,
  title     = {GroundingSuite: Measuring Complex Multi-Granular Pixel Grounding},
  author    = {Hu, Rui and Zhu, Lianghui and Zhang, Yuxuan and Cheng, Tianheng and Liu, Lei and Liu, Heng and
               Ran, Longjin and Chen, Xiaoxin and Liu, Wenyu and Wang, Xinggang},
  booktitle = {ICCV},
  year      = {2025},
  note      = {arXiv:2503.10596}
}"""

# How the benchmark scores, beside ours, for the evaluation report (read from evaluate_grounding.py, --mode mask).
METRIC_CONVENTIONS = {
    "benchmark": "GroundingSuite-Eval (GSEval)",
    "source": f"{HOMEPAGE}: evaluate_grounding.py (GroundingEvaluator.evaluate, --mode mask; calculate_mask_iou) "
              f"and {JSONL_FILENAME}",
    "headline": "gIoU over all expressions, and per class_id (stuff, part, multi, single)",
    "metrics": {
        "gIoU": "mean over expressions of the mask IoU (GIoU, 'mean IoU' in their code): our mIoU",
        "per class": "gIoU per class_id: our mIoU over the referents whose id starts with '{class}/' (stuff/, part/, "
                     "multi/, single/)",
        "cIoU": "not reported by their evaluator; our oIoU is shown beside it",
        "box mode": "their other mode scores boxes (Accuracy@0.5, IoU >= 0.5 of [x_min, y_min, x_max, y_max]); "
                    "not computed here",
    },
    "threshold": "their evaluator reads binary masks (RLE); here each segmenter's stated threshold makes them",
    "target": "the line's segmentation (compressed COCO RLE at the image's size); every mask in the release has "
              "pixels",
    "empty_target": "none in the release; in their code a union of zero scores IoU 0 (our --empty_gt zero)",
    "missing_prediction": "their evaluator skips an expression without a prediction or whose image is missing (it "
                          "leaves the mean); here every expression is predicted and a missing image is refused "
                          "when building",
    "text": "their evaluator gives no prompt: a line has 'caption' (a sentence) and 'label' (a short phrase); "
            "config default gives the model the caption, config label the label",
    "fields": "idx -> referent id ({class}/{idx}), image_path -> the image under --image_dir (the COCO "
              "unlabeled2017 images), class_id -> the referent id's prefix and granularity (2 part, else object), "
              "label -> category, caption -> sentences (config label: label), box -> bbox (xyxy to xywh), "
              "segmentation -> mask",
    "splits": f"one: test ({JSONL_FILENAME}: 3,715 lines on 2,727 images in the release; the paper rounds to 3,800)",
    # the harness options (unires.evaluation.metrics.MRESMetricOptions) under which our mIoU is their gIoU
    "harness_options": {"resolution": "original", "empty_gt": "zero"},
}


def class_of_referent(referent_id: str) -> str:
    """GSEval's class name of a referent built here (``"part/17"`` -> ``"part"``)."""
    return referent_id.split("/", 1)[0]


@dataclass
class GroundingSuiteConfig(datasets.BuilderConfig):
    """Args:
        jsonl_file: the ground-truth file, relative to ``data_dir`` unless absolute (default ``GroundingSuite-Eval.jsonl``).
        image_dir: folder that ``image_path`` is relative to (default: ``data_dir``).
        text: the line's field that becomes the sentence: ``caption`` (default) or ``label``.
    """

    jsonl_file: str = JSONL_FILENAME
    image_dir: Optional[str] = None
    text: str = "caption"

    def __post_init__(self):
        super().__post_init__()
        if self.text not in TEXT_FIELDS:
            raise ValueError(f"text must be one of {TEXT_FIELDS}, got {self.text!r}")


class GroundingSuiteEval(MRESBuilder):
    """GroundingSuite-Eval from ``GroundingSuite-Eval.jsonl`` and the COCO unlabeled2017 images."""

    BUILDER_CONFIG_CLASS = GroundingSuiteConfig
    BUILDER_CONFIGS = [GroundingSuiteConfig(name="default", description="GSEval, every line, the caption as sentence"),
                       GroundingSuiteConfig(name="label", text="label",
                                            description="GSEval, every line, the short label as sentence")]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 100
    DESCRIPTION = ("GroundingSuite-Eval: 3,715 referring expressions on 2,727 COCO unlabeled2017 images, at four "
                   "granularities (stuff, part, multiple objects, single object), masks scored by gIoU.")
    HOMEPAGE = HOMEPAGE
    LICENSE = LICENSE
    CITATION = CITATION

    def _paths(self) -> tuple[str, str]:
        """(the JSONL file, the image folder), absolute; the file must exist."""
        if not self.config.data_dir:
            raise ValueError(f"pass data_dir=<folder with {JSONL_FILENAME} (and the images, or image_dir=)>")
        base = os.path.abspath(os.path.expanduser(self.config.data_dir))
        path = self.config.jsonl_file if os.path.isabs(self.config.jsonl_file) else os.path.join(base, self.config.jsonl_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"GSEval ground truth not found: {path} (download {HOMEPAGE})")
        image_dir = self.config.image_dir
        if image_dir is None:  # their README's tree: images/unlabeled2017/... beside the JSONL
            image_dir = "images" if (not os.path.isdir(os.path.join(base, "unlabeled2017"))
                                     and os.path.isdir(os.path.join(base, "images"))) else base
        return path, image_dir if os.path.isabs(image_dir) else os.path.join(base, image_dir)

    def source_files(self, split: str = "test") -> list[str]:
        """The annotation files a split is read from (for the evaluation's dataset identity)."""
        return [self._paths()[0]]

    def _split_generators(self, dl_manager):
        path, image_dir = self._paths()
        return [datasets.SplitGenerator(name="test", gen_kwargs={"path": path, "image_dir": image_dir})]

    def _generate_examples(self, path, image_dir):
        rejects = self._reject_log()
        for key, row in read_gseval(path, image_dir, text=self.config.text):
            rejects.keep(len(row["referents"]))
            yield key, row


def read_gseval(path: str, image_dir: str, text: str = "caption"):
    """Yield ``(image_id, row)``, lines grouped by image in order of first appearance; :class:`RowError` on a bad line.

    ``text``: the field that becomes the referent's sentence (``caption`` or ``label``)."""
    by_image: "OrderedDict[str, list[tuple[int, dict]]]" = OrderedDict()
    seen_idx: dict = {}
    for number, record in jsonl_records(path):
        item = f"line {number}"
        for key in (*REQUIRED_KEYS, text):
            if not isinstance(record, dict) or record.get(key) is None:
                raise RowError(path, item, key, "missing")
        if record["idx"] in seen_idx:
            raise RowError(path, item, "idx", f"idx {record['idx']!r} already used on line {seen_idx[record['idx']]}")
        seen_idx[record["idx"]] = number
        by_image.setdefault(record["image_path"], []).append((number, record))
    for image_path, lines in by_image.items():
        first = f"line {lines[0][0]}"
        image_bytes, width, height = read_image_at(os.path.join(image_dir, image_path), (path, first, "image_path"))
        referents = [_referent(record, path, f"line {number}", width, height, text) for number, record in lines]
        image_id = os.path.splitext(os.path.basename(image_path))[0]
        yield image_id, {"image": {"bytes": image_bytes, "path": image_path}, "image_id": image_id, "width": width,
                         "height": height, "source": SOURCE, "referents": referents}


def _referent(record: dict, path: str, item: str, width: int, height: int, text: str = "caption") -> dict:
    class_id = record.get("class_id")
    class_name = CLASS_NAMES.get(class_id, f"class{class_id}")
    sentences = check_sentences([record[text]], (path, item, text))
    rle = mask_from_any(record["segmentation"], height, width, "", (path, item, "segmentation"))
    label = record.get("label")
    label = label.strip() if isinstance(label, str) else ""
    bbox, _ = checked_bbox(record.get("box"), width, height, mask_bbox(rle), xyxy=True)
    part = class_name == "part"
    return make_referent(f"{class_name}/{record['idx']}", "part" if part else "object", label, "" if part else label,
                         bbox, rle, sentences)


def build_groundingsuite(data_dir: str, output_dir: Optional[str], *, config_name: str = "default",
                         image_dir: Optional[str] = None, cache_dir: Optional[str] = None, max_shard_size: str = "256MB",
                         rejects_path: Optional[str] = None, **push) -> str:
    """Build GSEval from ``data_dir`` and write ``output_dir`` (Parquet + card with source, licence and conventions)."""
    extra = {"image_dir": image_dir} if image_dir else {}
    builder = GroundingSuiteEval(config_name=config_name, data_dir=data_dir, cache_dir=cache_dir,
                                 rejects_path=rejects_path, **extra)
    return publish_built(builder, output_dir, card_data(config_name), max_shard_size=max_shard_size, **push)


def card_data(config_name: str = "default") -> dict:
    """The dataset card's fields: source, licence, citation, and what the schema does not hold."""
    return {
        "pretty_name": f"GroundingSuite-Eval (MRES schema, {config_name})",
        "description": GroundingSuiteEval.DESCRIPTION,
        "homepage": HOMEPAGE,
        "license": LICENSE,
        "citation": CITATION,
        "notes": (
            f"Converted by `dataset_scripts.groundingsuite` from `{JSONL_FILENAME}`; images: COCO unlabeled2017 "
            f"(their own terms). `sentences` holds the benchmark's `{'label' if config_name == 'label' else 'caption'}`, "
            "`category` its `label`. Not held by the "
            "schema: `class_id`, kept as the start of `referent_id` (`stuff/`, `part/`, `multi/`, `single/` + `idx`); "
            "`box` is the annotated box converted to [x, y, w, h]. How the benchmark scores, beside ours:\n\n"
            + conventions_markdown(METRIC_CONVENTIONS)
        ),
        "tags": ["referring-expression-segmentation", "mres", "benchmark"],
    }
