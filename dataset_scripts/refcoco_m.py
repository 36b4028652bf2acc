"""RefCOCO_m (Wang et al., CVPR 2024): RefCOCO with manual part-level referents, as a builder.

The user downloads RefCOCO_m in its released CRIS layout and COCO train2014 images, then::

    builder = RefCOCOm(data_dir="/data/refcocom")   # annotations/, masks/, images/
    builder.download_and_prepare()
    ds = builder.as_dataset()                       # one split per annotations/{split}.json

The layout and its conventions are described in :mod:`dataset_scripts.cris_layout` (CRIS's
converter's ``anns/{dataset}/`` and ``masks/{dataset}/`` are accepted too; the config fields
``annotation_dir``, ``mask_dir`` and ``image_dir`` name other folders). Every split file present
is read (public names include ``val_part_only`` and ``val_object_part``); items are grouped by
image; bad items are skipped and fixes recorded in ``rejects.jsonl`` (see
:class:`~run_support.rejects.RejectLog`).
"""

from __future__ import annotations

from .builder_base import MRESBuilder
from run_support.citation import UNIRES_CITATION
from .coco_common import SOURCE
from .cris_layout import CRISLayoutConfig, cris_split_generators, read_cris_split


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

    def _generate_examples(self, split, annotation_file, image_dir, mask_dir, default_granularity=None, id_prefix=None):
        yield from read_cris_split(
            split, annotation_file, image_dir, mask_dir, self._reject_log(),
            source=SOURCE, default_granularity=default_granularity, id_prefix=id_prefix,
        )
