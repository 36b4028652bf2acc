"""Dense captioner for the MRES data engine (see README, "Dense captioner").

A PEFT-LoRA fine-tune of an open LVLM that describes the region inside a box at image, object
and part granularity, with boxes written in the base model family's own syntax.

The names below are imported on first use, so that `captioner.defaults` and `captioner.arguments` (what a
command line's `--help` needs) load without torch, transformers or PEFT.
"""

from importlib import import_module as _import_module
from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the packages

_EXPORTS = {
    "box_prompts": ("CAPTION_GRANULARITIES", "PROMPT_TEMPLATES", "build_messages", "build_prompt", "clip_box",
                    "denormalize_box", "format_box", "normalize_box", "validate_box"),
    "defaults": ("DEFAULT_BASE_MODEL", "DEFAULT_LORA_TARGET_MODULES", "DEFAULT_MAX_IMAGE_TOKENS"),
    "encoding": ("CaptionCollator", "load_image", "render_prompt"),
    "generate": ("BoxCaption", "BoxRequest", "DenseCaptioner"),
    "modeling": ("add_lora", "load_base_model", "load_captioner"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'captioner' has no attribute {name!r}")
    value = getattr(_import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # once
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
