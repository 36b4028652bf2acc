"""The engine's stages in the paper's order, built from :class:`~mres_engine.options.StageOptions`.

The default ``--stages_factory`` (``mres_engine.stages.build:build_stages``). Kept apart from
``options.py`` so that imports run one way: every stage reads its settings from ``options``, no
stage imports another, and only this module knows all the stages.
"""

from __future__ import annotations

from .captions import Captions
from .clip_filter import ClipFilter
from .load_images import LoadImages
from .object_masks import ObjectMasks
from ..options import StageOptions
from .base import EngineStage
from .part_masks import PartMasks
from .part_vocabulary import PartVocabulary


def build_stages(options: StageOptions) -> list[EngineStage]:
    """The engine's stages in the paper's order, configured by ``options`` (models load on first use)."""
    object_masks = ObjectMasks.from_options(options)
    stages: list[EngineStage] = [LoadImages(options.image_root), object_masks]
    if options.part_vocabulary != "none":
        stages.append(PartVocabulary.from_options(options))
        stages.append(PartMasks.from_options(options, segmenter=object_masks.segmenter))
    stages.append(Captions.from_options(options))
    stages.append(ClipFilter.from_options(options))
    return stages
