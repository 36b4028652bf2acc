"""Fine-tune data for the dense captioner, one builder per public release, and their mixture."""
from .coco_captions import CocoCaptionsForCaptioner
from .mixture import CAPTION_SOURCES, build_caption_mixture, load_caption_source, parse_mapping
from .part_names import readable_name
from .parts import PacoPartsForCaptioner, PartImageNetForCaptioner, part_caption
from .schema import CAPTION_FEATURES, CaptionBuilder, CaptionBuilderConfig
from .visual_genome import VisualGenomeRegionsForCaptioner

__all__ = [
    "CAPTION_FEATURES",
    "CAPTION_SOURCES",
    "CaptionBuilder",
    "CaptionBuilderConfig",
    "CocoCaptionsForCaptioner",
    "PacoPartsForCaptioner",
    "PartImageNetForCaptioner",
    "VisualGenomeRegionsForCaptioner",
    "build_caption_mixture",
    "load_caption_source",
    "parse_mapping",
    "part_caption",
    "readable_name",
]
