"""Loading a base LVLM, adding LoRA, and loading a trained adapter (merged or not)."""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Sequence

import torch
try:  # the captioner belongs to the engine extra: say so instead of a bare ModuleNotFoundError
    from peft import LoraConfig, PeftModel, get_peft_model
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "The dense captioner needs PEFT, which comes with the data engine's extra: pip install \"unires[engine]\""
    ) from error
from transformers import AutoModelForImageTextToText, AutoProcessor

from .defaults import DEFAULT_BASE_MODEL, DEFAULT_LORA_TARGET_MODULES, VISION_MODULE_NAMES

logger = logging.getLogger(__name__)


def _dtype(torch_dtype):
    if torch_dtype in (None, "auto") or isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    return getattr(torch, torch_dtype)


def load_base_model(name_or_path: str = DEFAULT_BASE_MODEL, torch_dtype=None, attn_implementation: str | None = None, **kwargs):
    """``(model, processor)`` of any ``AutoModelForImageTextToText`` checkpoint (Hub id or folder)."""
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=_dtype(torch_dtype), **kwargs)
    processor = AutoProcessor.from_pretrained(name_or_path)
    return model, processor


def vision_module_name(model) -> str | None:
    """Short name of the vision tower sub-module (``visual``, ``vision_tower``...), if found."""
    for name, _ in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in VISION_MODULE_NAMES[:-1]:
            return last
    return None


def lora_target_regex(target_modules: Sequence[str] = DEFAULT_LORA_TARGET_MODULES, excluded: Sequence[str] = VISION_MODULE_NAMES) -> str:
    """A PEFT ``target_modules`` regex: the named projections, outside the vision tower/projector."""
    names = "|".join(re.escape(name) for name in target_modules)
    blocked = "|".join(re.escape(name) for name in excluded)
    return rf"^(?!.*\b(?:{blocked})\b).*\.(?:{names})$"


def add_lora(
    model,
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: Sequence[str] = DEFAULT_LORA_TARGET_MODULES,
    freeze_vision_tower: bool = True,
) -> PeftModel:
    """Wrap ``model`` with LoRA on the language model's projections.

    Everything else is frozen; with ``freeze_vision_tower=False`` the vision tower is trained in
    full and saved with the adapter (PEFT ``modules_to_save``).
    """
    modules_to_save = None
    if not freeze_vision_tower:
        name = vision_module_name(model)
        if name is None:
            raise ValueError(f"No vision tower (one of {VISION_MODULE_NAMES}) found in {type(model).__name__}.")
        modules_to_save = [name]
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=lora_target_regex(target_modules),
        modules_to_save=modules_to_save,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    if not any(p.requires_grad for n, p in peft_model.named_parameters() if "lora_" in n):
        raise ValueError(f"LoRA target modules {list(target_modules)} matched no layer of {type(model).__name__}.")
    return peft_model


def _repo_file(name_or_path: str, filename: str) -> str | None:
    """``filename`` of a local folder or of a Hub repository (through the Hub cache when offline), or None."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        return hf_hub_download(name_or_path, filename)
    except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError, OfflineModeIsEnabled):
        return None


def is_adapter(name_or_path: str) -> bool:
    """Whether ``name_or_path`` (a folder or a Hub id) holds a PEFT adapter rather than a full model."""
    return _repo_file(name_or_path, "adapter_config.json") is not None


def load_captioner(
    name_or_path: str = DEFAULT_BASE_MODEL,
    base_model: str | None = None,
    merge: bool = True,
    torch_dtype=None,
    attn_implementation: str | None = None,
    **kwargs,
):
    """``(model, processor)`` from a base checkpoint or from a saved LoRA adapter (folder or Hub id).

    For an adapter, the base named in its ``adapter_config.json`` (or ``base_model``) is loaded
    and the adapter applied; ``merge=True`` folds it in (``merge_and_unload``) for fast inference.
    The processor saved with the adapter is used when there is one, else the base's.
    """
    config_file = _repo_file(name_or_path, "adapter_config.json")
    if config_file is None:
        return load_base_model(name_or_path, torch_dtype, attn_implementation, **kwargs)
    with open(config_file, encoding="utf-8") as handle:
        base_name = base_model or json.load(handle).get("base_model_name_or_path")
    if not base_name:
        raise ValueError(f"Adapter {name_or_path!r} names no base model; pass base_model=.")
    model, processor = load_base_model(base_name, torch_dtype, attn_implementation, **kwargs)
    if _repo_file(name_or_path, "processor_config.json") or _repo_file(name_or_path, "tokenizer_config.json"):
        processor = AutoProcessor.from_pretrained(name_or_path)
    model = PeftModel.from_pretrained(model, name_or_path)
    if merge:
        model = model.merge_and_unload()
    return model.eval(), processor
