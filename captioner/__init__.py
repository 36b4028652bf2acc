"""Dense captioner for the MRES data engine (see README, "Dense captioner").

A PEFT-LoRA fine-tune of an open LVLM that describes the region inside a box at image, object
and part granularity, with boxes written in the base model family's own syntax.
"""

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the four packages

try:  # the captioner belongs to the engine extra: say so instead of a bare ModuleNotFoundError
    import peft  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The dense captioner needs PEFT, which comes with the data engine's extra: pip install \"unires[engine]\""
    ) from error

from .box_prompts import (
    CAPTION_GRANULARITIES,
    PROMPT_TEMPLATES,
    build_messages,
    build_prompt,
    clip_box,
    denormalize_box,
    format_box,
    normalize_box,
    validate_box,
)
from .defaults import DEFAULT_BASE_MODEL, DEFAULT_LORA_TARGET_MODULES
from .encoding import CaptionCollator, load_image, render_prompt
from .generate import BoxCaption, BoxRequest, DenseCaptioner
from .modeling import add_lora, load_base_model, load_captioner

__all__ = [
    "DEFAULT_BASE_MODEL",
    "DEFAULT_LORA_TARGET_MODULES",
    "CAPTION_GRANULARITIES",
    "PROMPT_TEMPLATES",
    "BoxCaption",
    "BoxRequest",
    "CaptionCollator",
    "DenseCaptioner",
    "add_lora",
    "build_messages",
    "build_prompt",
    "clip_box",
    "denormalize_box",
    "format_box",
    "load_base_model",
    "load_captioner",
    "load_image",
    "normalize_box",
    "render_prompt",
    "validate_box",
]
