"""Fine-tuning a UniRES checkpoint on little data, three ways from one flag (`--finetune`):

- `full`: every weight trains (the default; what `examples/train.py` always did);
- `frozen_towers`: the CLIP vision and text towers (`BACKBONE_PREFIXES`) are frozen; the group tokens, the region
  filters, the decoder and the mask head train;
- `lora`: LoRA (peft) on the linear layers of the decoder, the region filters and the projections (the mask head's
  included), everything else frozen, the CLIP towers always. The run checkpoints the adapter's weights only and saves
  what peft users expect: `PeftModel.save_pretrained` (adapter_config.json + adapter_model.safetensors), which
  `PeftModel.from_pretrained(UniRESModel.from_pretrained(base), folder)` loads and `merge_and_unload()` folds into a
  plain `UniRESModel` (`unires.evaluation.segmenters.unires.load_unires_model` does both for a folder or Hub id).

peft is an optional dependency: `pip install 'unires[finetune]'`.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Optional, Sequence

from ..evaluation.segmenters.unires import ADAPTER_FILES, is_peft_model

logger = logging.getLogger(__name__)

FINETUNE_WAYS = ("full", "frozen_towers", "lora")
# The CLIP towers (`UniRESModel.from_clip` loads them): frozen by `frozen_towers` and `lora`. Names as
# `UniRESModel.named_parameters()` gives them (the trainer's AdamW groups use the same prefixes).
TOWER_PREFIXES = ("vision_encoder.vision_model.", "text_model.")
# Where LoRA may go: the modules after the towers (`UniRESDecoder`: projections, region filters, the two stages;
# `UniRESMaskHead`: its projections). A name in --lora_target_modules is matched as the last part(s) of a module's
# path inside these, so `q_proj` never reaches the CLIP towers' own q_proj.
LORA_SCOPES = ("decoder", "mask_head")
# Every linear layer of those: attention (q, k, v, out) and MLP (fc1, fc2) of the region filters and of both decoder
# stages, the region filters' scoring (score_query, score_key), the input projections of the decoder (their Linear is
# the first item of a Linear + LayerNorm Sequential, hence `.0`), and the mask head's projections.
DEFAULT_LORA_TARGET_MODULES = (
    "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2", "score_query", "score_key",
    "visual_projection.0", "text_projection.0", "sentence_projection.0", "group_projection.0",
    "projection", "alignment_visual_projection", "alignment_text_projection", "pixel_filter",
)
PEFT_INSTALL_HINT = "pip install 'unires[finetune]'"


def require_peft():
    """The `peft` module, or an ImportError that says how to install it."""
    try:
        import peft
    except ImportError as error:
        raise ImportError(f"--finetune lora needs peft, which is not installed: {PEFT_INSTALL_HINT}") from error
    return peft


def parse_target_modules(value) -> list[str]:
    """`--lora_target_modules` ("q_proj,v_proj", a list, or None for the default) as a list of names."""
    if value is None or value == "":
        return list(DEFAULT_LORA_TARGET_MODULES)
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [name.strip() for name in names if name and name.strip()]
    if not names:
        raise ValueError(f"--lora_target_modules {value!r} names no module")
    return names


def lora_target_regex(target_modules: Sequence[str] = DEFAULT_LORA_TARGET_MODULES) -> str:
    """peft's `target_modules` as a regex (matched against the whole module path): the named modules inside the
    decoder and the mask head only."""
    scopes = "|".join(re.escape(scope) for scope in LORA_SCOPES)
    names = "|".join(re.escape(name) for name in target_modules)
    return rf"^(?:{scopes})\.(?:.*\.)?(?:{names})$"


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters."""
    trainable = total = 0
    for parameter in model.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def freeze_towers(model) -> int:
    """Freeze the CLIP vision and text towers of a `UniRESModel`; returns how many parameters were frozen."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if name.startswith(TOWER_PREFIXES):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    if not frozen:
        raise ValueError(f"--finetune frozen_towers found no CLIP tower parameter (names starting with "
                         f"{', '.join(TOWER_PREFIXES)}) in {type(model).__name__}")
    return frozen


def base_model_reference(model, base_model_name_or_path: Optional[str] = None) -> str:
    """What an adapter's `base_model_name_or_path` records: the checkpoint the run started from (a local folder as
    an absolute path, so that the adapter loads from any working directory; a Hub id as it is)."""
    name = base_model_name_or_path or getattr(model, "name_or_path", "") or ""
    if not name:
        raise ValueError("--finetune lora trains an adapter on a saved UniRES checkpoint, which it names as its base: "
                         "start from one with --model_name_or_path (a folder or Hub id)")
    return os.path.abspath(name) if os.path.isdir(name) else name


def add_lora(model, *, r: int = 8, alpha: int = 16, dropout: float = 0.05,
             target_modules: Sequence[str] = DEFAULT_LORA_TARGET_MODULES,
             base_model_name_or_path: Optional[str] = None):
    """Wrap a `UniRESModel` in a `peft.PeftModel` with LoRA on `target_modules` (inside the decoder and the mask
    head); every other weight, the CLIP towers' included, is frozen."""
    require_peft()
    from peft import LoraConfig, get_peft_model

    base = base_model_reference(model, base_model_name_or_path)
    names = parse_target_modules(target_modules)
    matched = {name for name, _ in model.named_modules() if re.match(lora_target_regex(names), name)}
    unmatched = [target for target in names
                 if not any(module == target or module.endswith("." + target) for module in matched)]
    if not matched:
        raise ValueError(f"--lora_target_modules {','.join(names)} matched no layer of the decoder or the mask head "
                         f"of {type(model).__name__}; the defaults are {','.join(DEFAULT_LORA_TARGET_MODULES)}")
    if unmatched and list(names) != list(DEFAULT_LORA_TARGET_MODULES):  # the defaults cover optional layers
        raise ValueError(f"--lora_target_modules: {', '.join(unmatched)} matched no layer of the decoder or the mask "
                         f"head of {type(model).__name__}")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_regex(names),
                        bias="none", base_model_name_or_path=base)
    peft_model = get_peft_model(model, config)
    peft_model.peft_config["default"].base_model_name_or_path = base
    return peft_model


def apply_finetune(model, model_args):
    """`model` made ready for `model_args.finetune` (full, frozen_towers, lora): returns the model to train (a
    `PeftModel` for lora)."""
    way = getattr(model_args, "finetune", "full") or "full"
    if way not in FINETUNE_WAYS:
        raise ValueError(f"--finetune {way!r} is not one of {', '.join(FINETUNE_WAYS)}")
    if way == "frozen_towers":
        freeze_towers(model)
    elif way == "lora":
        if is_peft_model(model):
            raise ValueError("--finetune lora: the model already carries a peft adapter")
        model = add_lora(model, r=model_args.lora_r, alpha=model_args.lora_alpha, dropout=model_args.lora_dropout,
                         target_modules=parse_target_modules(model_args.lora_target_modules),
                         base_model_name_or_path=getattr(model_args, "base_model_id", None) or model_args.model_name_or_path)
    trainable, total = count_parameters(model)
    logger.info("--finetune %s: %s of %s parameters train (%.2f%%)", way, f"{trainable:,}", f"{total:,}",
                100.0 * trainable / max(1, total))
    return model


__all__ = ["ADAPTER_FILES", "DEFAULT_LORA_TARGET_MODULES", "FINETUNE_WAYS", "TOWER_PREFIXES", "add_lora",
           "apply_finetune", "count_parameters", "freeze_towers", "lora_target_regex", "parse_target_modules",
           "require_peft"]
