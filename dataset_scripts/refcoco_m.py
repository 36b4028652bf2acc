"""RefCOCO_m (Wang et al., CVPR 2024): RefCOCO with manual part-level referents, as a builder.

The user downloads RefCOCO_m in its released CRIS layout and COCO train2014 images, then::

    builder = RefCOCOm(data_dir="/data/refcocom")   # annotations/, masks/, images/
    builder.download_and_prepare()
    ds = builder.as_dataset()                       # one split per annotations/{split}.json

Every split file present is read (public names include ``val_part_only`` and
``val_object_part``); items are grouped by image; bad items are skipped and logged in
``rejects.jsonl`` (see :class:`~dataset_scripts.rejects.RejectLog`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import datasets

from .builder_base import UNIRES_CITATION, MRESBuilder
from .coco_common import SOURCE, find_first
from .cris_layout import list_splits, read_cris_split



@dataclass
class CRISLayoutConfig(datasets.BuilderConfig):
    """Where the CRIS-layout files are, relative to ``data_dir`` unless absolute.

    Args:
        annotation_dir: folder of ``{split}.json`` files.
        mask_dir: folder of ``{segment_id}.png`` masks.
        image_dir: folder of the images named by ``img_name``.
        splits: read only these splits (default: every ``*.json`` present).
    """

    annotation_dir: str = "annotations"
    mask_dir: str = "masks"
    image_dir: str = "images"
    splits: Optional[tuple[str, ...]] = None


def resolve_cris_dirs(config: CRISLayoutConfig) -> tuple[str, str, str]:
    """Absolute (annotation, mask, image) folders; ``FileNotFoundError`` naming a missing one."""
    if not config.data_dir:
        raise ValueError("pass data_dir=<folder with annotations/, masks/, images/> (the downloaded release)")
    base = os.path.abspath(os.path.expanduser(config.data_dir))
    dirs = []
    for name, sub in (("annotation folder", config.annotation_dir), ("mask folder", config.mask_dir),
                      ("image folder", config.image_dir)):
        dirs.append(find_first([os.path.join(base, sub)], f"{name} '{sub}'", is_dir=True))
    return tuple(dirs)


def cris_split_generators(config: CRISLayoutConfig, default_granularity: Optional[str] = None):
    annotation_dir, mask_dir, image_dir = resolve_cris_dirs(config)
    splits = list(config.splits) if config.splits else list_splits(annotation_dir)
    if not splits:
        raise FileNotFoundError(f"no split file (*.json) found in {annotation_dir}")
    generators = []
    for split in splits:
        path = find_first([os.path.join(annotation_dir, f"{split}.json")], f"annotation file of split '{split}'")
        generators.append(datasets.SplitGenerator(name=split, gen_kwargs={
            "split": split, "annotation_file": path, "image_dir": image_dir, "mask_dir": mask_dir,
            "default_granularity": default_granularity,
        }))
    return generators


class RefCOCOm(MRESBuilder):
    """RefCOCO_m from its CRIS-layout release (``data_dir`` is required)."""

    BUILDER_CONFIG_CLASS = CRISLayoutConfig
    BUILDER_CONFIGS = [CRISLayoutConfig(name="default", description="RefCOCO_m, every split file present")]
    DEFAULT_CONFIG_NAME = "default"
    DEFAULT_WRITER_BATCH_SIZE = 100
    DESCRIPTION = (
        "RefCOCO_m: RefCOCO images with manual part-level referring expressions added to the object-level "
        "ones (multi-granularity referring expression segmentation benchmark)."
    )
    CITATION = UNIRES_CITATION
    LICENSE = "other"
    HOMEPAGE = "https://arxiv.org/abs/2312.08007"

    def _split_generators(self, dl_manager):
        return cris_split_generators(self.config)

    def _generate_examples(self, split, annotation_file, image_dir, mask_dir, default_granularity=None):
        yield from read_cris_split(
            split, annotation_file, image_dir, mask_dir, self._reject_log(),
            source=SOURCE, default_granularity=default_granularity,
        )
