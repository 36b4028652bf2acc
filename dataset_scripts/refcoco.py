"""RefCOCO, RefCOCO+ and RefCOCOg as builders, from the ``refer`` layout (or the CRIS layout).

``refer`` layout, as distributed with the refer API (``data_dir`` is either the folder that holds
``refcoco/``, ``refcoco+/``, ``refcocog/``, or one of those folders itself)::

    refcoco/refs(unc).p      pickle: list of refs {ref_id, ann_id, image_id, category_id, split,
                             sentences [{sent, raw, tokens, sent_id}], sent_ids, file_name}
    refcoco/instances.json   COCO-style {images, annotations (polygons), categories}
    train2014/ (or images/train2014, images/mscoco/images/train2014)   COCO images

The pickle is read with :func:`dataset_scripts.safe_pickle.safe_load`, which refuses anything
but plain containers and scalars. Splits are those found in the refs file (unc: train, val,
testA, testB; umd: train, val, test; google: train, val). Reference counts are compared with
the official ones (a check some Hub mirrors fail): a mismatch is logged, or raises with
``strict_counts=True``. A ``ref_id`` that occurs twice is published once (the repeat is skipped
and logged).

The CRIS layout (:mod:`dataset_scripts.cris_layout`: ``annotations/`` or ``anns/{dataset}/``,
``masks/``, ``images/``) is read when ``data_dir`` has no refs file, or when ``annotation_dir``
is given; ``mask_dir`` and ``image_dir`` apply to it as well.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import datasets

from .builder_base import MRESBuilder
from .coco_common import (
    COCO_CATEGORIES,
    SOURCE,
    check_sentences,
    checked_bbox,
    find_coco_image_dir,
    find_first,
    read_group_image,
)
from .cris_layout import CRISLayoutConfig, cris_split_generators, has_cris_layout, read_cris_split
from .features import make_referent
from .masks import decode_mask, encode_mask, mask_area, mask_bbox, mask_from_polygons
from .safe_pickle import safe_load

logger = logging.getLogger(__name__)

# Official numbers of referred objects (refs) per split.
OFFICIAL_REF_COUNTS = {
    "refcoco-unc": {"train": 42404, "val": 3811, "testA": 1975, "testB": 1810},
    "refcoco+-unc": {"train": 42278, "val": 3805, "testA": 1975, "testB": 1798},
    "refcocog-umd": {"train": 42226, "val": 2573, "test": 5023},
    "refcocog-google": {"train": 44822, "val": 5000},
}
_SPLIT_ORDER = ("train", "val", "testA", "testB", "testC", "test")

_CITATIONS = {
    "refcoco": """@inproceedings{yu2016modeling,
  title={Modeling Context in Referring Expressions}, author={Yu, Licheng and Poirson, Patrick and Yang, Shan and Berg, Alexander C and Berg, Tamara L},
  booktitle={ECCV}, year={2016}
}""",
    "refcocog": """@inproceedings{mao2016generation,
  title={Generation and Comprehension of Unambiguous Object Descriptions}, author={Mao, Junhua and Huang, Jonathan and Toshev, Alexander and Camburu, Oana and Yuille, Alan L and Murphy, Kevin},
  booktitle={CVPR}, year={2016}
}
@inproceedings{nagaraja2016modeling,
  title={Modeling Context Between Objects for Referring Expression Understanding}, author={Nagaraja, Varun K and Morariu, Vlad I and Davis, Larry S},
  booktitle={ECCV}, year={2016}
}""",
}


@dataclass
class RefCOCOConfig(CRISLayoutConfig):
    """One dataset/split-by pair, plus the folder options of :class:`CRISLayoutConfig`.

    Args:
        dataset: ``refcoco``, ``refcoco+`` or ``refcocog`` (also the CRIS converter's subfolder).
        split_by: ``unc``, ``umd`` or ``google``.
        image_dir: folder of COCO train2014 images; when empty, the usual places under
            ``data_dir`` are searched.
        strict_counts: raise if the refs per split differ from the official counts.
    """

    dataset: str = "refcoco"
    split_by: str = "unc"
    strict_counts: bool = False


def _config(dataset: str, split_by: str) -> RefCOCOConfig:
    return RefCOCOConfig(name=f"{dataset}-{split_by}", dataset=dataset, split_by=split_by,
                         description=f"{dataset} with the {split_by} splits")


class RefCOCO(MRESBuilder):
    """RefCOCO / RefCOCO+ / RefCOCOg (``config_name`` picks one; ``data_dir`` is required)."""

    BUILDER_CONFIG_CLASS = RefCOCOConfig
    BUILDER_CONFIGS = [
        _config("refcoco", "unc"), _config("refcoco+", "unc"), _config("refcocog", "umd"),
        _config("refcocog", "google"), _config("refcoco", "google"),
    ]
    DEFAULT_CONFIG_NAME = "refcoco-unc"
    DEFAULT_WRITER_BATCH_SIZE = 100
    DESCRIPTION = "Referring expression segmentation on COCO train2014 images (object-level referents)."
    LICENSE = "other"
    HOMEPAGE = "https://github.com/lichengunc/refer"

    def _info(self):
        info = super()._info()
        info.citation = _CITATIONS["refcocog" if self.config.dataset == "refcocog" else "refcoco"]
        return info

    # ------------------------------------------------------------------ locating files

    def _base(self) -> str:
        if not self.config.data_dir:
            raise ValueError("pass data_dir=<folder holding the refer files> (the downloaded release)")
        return os.path.abspath(os.path.expanduser(self.config.data_dir))

    def _refs_candidates(self, base: str) -> list[str]:
        name = f"refs({self.config.split_by}).p"
        return [os.path.join(base, self.config.dataset, name), os.path.join(base, name)]

    def _split_generators(self, dl_manager):
        base = self._base()
        refs_candidates = self._refs_candidates(base)
        has_refs = any(os.path.isfile(p) for p in refs_candidates)
        if self.config.annotation_dir or (not has_refs and has_cris_layout(base, self.config)):
            # CRIS layout: every referent is an object; ids as in the refer layout ({config}/{ref_id}).
            return cris_split_generators(self.config, default_granularity="object", id_prefix=self.config.name)
        refs_path = find_first(
            refs_candidates,
            f"refs file of {self.config.name} (nor a CRIS layout: annotations/ or anns/{self.config.dataset}/)",
        )
        instances_path = find_first(
            [os.path.join(os.path.dirname(refs_path), "instances.json"), os.path.join(base, "instances.json")],
            "instances.json",
        )
        image_dir = find_coco_image_dir(base, self.config.image_dir)
        refs = safe_load(refs_path)
        if not isinstance(refs, list):
            raise ValueError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
        with open(instances_path, encoding="utf-8") as f:
            instances = json.load(f)

        by_split: dict[str, list[dict]] = {}
        first_split: dict = {}  # ref_id -> split of its first occurrence
        repeats: list[tuple[str, dict]] = []
        for i, ref in enumerate(refs):
            if not isinstance(ref, dict) or "split" not in ref or "ref_id" not in ref:
                raise ValueError(f"{refs_path}: ref #{i} is not a dict with 'split' and 'ref_id' keys")
            split = str(ref["split"])
            if ref.get("ref_id") in first_split:
                repeats.append((split, ref))
                by_split.setdefault(split, [])  # a split of repeats only is still a split of the file
                continue
            first_split[ref.get("ref_id")] = split
            by_split.setdefault(split, []).append(ref)
        self._check_counts({s: len(r) for s, r in by_split.items()})
        if self.config.splits:
            missing = set(self.config.splits) - set(by_split)
            if missing:
                raise ValueError(f"split(s) {sorted(missing)} not in {refs_path}; it has {sorted(by_split)}")
            by_split = {s: by_split[s] for s in self.config.splits}
        rejects = self._reject_log()
        for split, ref in repeats:  # one referent_id must name one referent
            if split in by_split:
                ref_id = ref.get("ref_id")
                rejects.skip(f"{self.config.name}/{ref_id}",
                             f"duplicate ref_id: {ref_id} repeats the ref first seen in split {first_split[ref_id]}",
                             split=split)
        order = sorted(by_split, key=lambda s: (_SPLIT_ORDER.index(s) if s in _SPLIT_ORDER else len(_SPLIT_ORDER), s))
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={
                "split": split, "refs": tuple(by_split[split]), "instances": instances, "image_dir": image_dir,
            })
            for split in order
        ]

    def _check_counts(self, counts: dict[str, int]) -> None:
        official = OFFICIAL_REF_COUNTS.get(self.config.name)
        if official is None or counts == official:
            return
        message = f"{self.config.name}: refs per split {counts} differ from the official {official}"
        if self.config.strict_counts:
            raise ValueError(message)
        logger.warning(message + " (a partial or altered copy?)")

    # ------------------------------------------------------------------ generation

    def _generate_examples(self, split, refs=None, instances=None, image_dir=None, **cris_kwargs):
        rejects = self._reject_log()
        if refs is None:  # CRIS layout
            yield from read_cris_split(split, rejects=rejects, source=SOURCE, image_dir=image_dir, **cris_kwargs)
            return
        images = {img["id"]: img for img in instances.get("images", [])}
        anns = {ann["id"]: ann for ann in instances.get("annotations", [])}
        cats = {cat["id"]: cat["name"] for cat in instances.get("categories", [])}
        by_image: "OrderedDict[int, list[dict]]" = OrderedDict()
        for ref in refs:
            by_image.setdefault(ref.get("image_id"), []).append(ref)
        for image_id, group in by_image.items():
            ids = [f"{self.config.name}/{ref.get('ref_id')}" for ref in group]
            info = images.get(image_id)
            if info is None:
                for rid in ids:
                    rejects.skip(rid, f"image id not in instances.json: {image_id}", split=split)
                continue
            loaded = read_group_image(os.path.join(image_dir, info["file_name"]), ids, rejects, split)
            if loaded is None:
                continue
            image_bytes, width, height = loaded
            if (width, height) != (info.get("width", width), info.get("height", height)):
                for rid in ids:
                    rejects.skip(rid, f"image is {width}x{height} but instances.json says "
                                      f"{info.get('width')}x{info.get('height')}", split=split)
                continue
            referents = []
            for ref, rid in zip(group, ids):
                referent = self._referent(ref, rid, anns, cats, width, height, rejects, split)
                if referent is not None:
                    referents.append(referent)
            if referents:
                yield str(image_id), {
                    "image": {"bytes": image_bytes, "path": info["file_name"]},
                    "image_id": str(image_id),
                    "width": width,
                    "height": height,
                    "source": SOURCE,
                    "referents": referents,
                }

    @staticmethod
    def _referent(ref, rid, anns, cats, width, height, rejects, split) -> Optional[dict]:
        """One referent of a ref, or None after logging why it is skipped; fixes are logged only when kept."""
        fixes = []
        sentences, problem = check_sentences(ref.get("sentences"))
        if not sentences:
            rejects.skip(rid, problem, split=split)
            return None
        if problem:
            fixes.append(problem)
        ann = anns.get(ref.get("ann_id"))
        if ann is None:
            rejects.skip(rid, f"annotation id not in instances.json: {ref.get('ann_id')}", split=split)
            return None
        segmentation = ann.get("segmentation")
        try:
            if isinstance(segmentation, list):
                rle = mask_from_polygons(segmentation, height, width)
                coords = [c for poly in segmentation for c in poly]
                if any(x < 0 or x > width for x in coords[0::2]) or any(y < 0 or y > height for y in coords[1::2]):
                    fixes.append("polygon partly outside the image, clipped")
            elif isinstance(segmentation, dict):  # crowd RLE
                rle = encode_mask(decode_mask(segmentation))
                if rle["size"] != [height, width]:
                    raise ValueError(f"RLE size {rle['size']} differs from the image size {[height, width]}")
            else:
                raise ValueError(f"unsupported segmentation {type(segmentation).__name__}")
        except ValueError as err:
            rejects.skip(rid, f"invalid segmentation: {err}", split=split)
            return None
        if mask_area(rle) == 0:
            rejects.skip(rid, "polygon outside the image (empty mask)", split=split)
            return None
        bbox, problem = checked_bbox(ann.get("bbox"), width, height, mask_bbox(rle))
        if problem:
            fixes.append(problem)
        # the annotation's own category (refs repeat it; the segmentation's is authoritative)
        category_id = ann.get("category_id", ref.get("category_id"))
        category = cats.get(category_id) or COCO_CATEGORIES.get(category_id)
        if category is None:
            fixes.append(f"category id not in instances.json nor COCO, category left empty: {category_id!r}")
            category = ""
        for reason in fixes:
            rejects.fix(rid, reason, split=split)
        rejects.keep()
        return make_referent(rid, "object", category, category, bbox, rle, sentences)
