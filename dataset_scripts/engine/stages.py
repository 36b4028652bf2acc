"""The engine's stages in the paper's order, built from :class:`~dataset_scripts.engine.options.StageOptions`.

Kept apart from ``options.py`` so that imports run one way: every stage reads its settings from
``options``, and only this module knows all the stages.
"""

from __future__ import annotations

from .captions import Captions
from .clip_filter import ClipFilter
from .input import LoadImages
from .object_masks import ObjectMasks
from .options import StageOptions
from .part_masks import PartMasks
from .part_vocabulary import PartVocabulary
from .stage import EngineStage


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
