"""The model card (README.md) written beside every trained UniRES checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from huggingface_hub import ModelCard, ModelCardData

from run_support.citation import UNIRES_CITATION

from ..evaluation.metrics import format_metrics_table


TEMPLATE = """---
{card_data}
---

# UniRES{title_suffix}

A UniRES model for multi-granularity referring expression segmentation (MRES): given an
image and an expression naming an object ("the red car on the left") or a part of one
("the wheels of the blue bus"), it predicts the referred pixels.

## Usage

{usage}

## Try it in a browser

{try_it}

## Model

| | |
|---|---|
| vision tower | CLIP ViT, {vision_layers} layers, width {vision_width}, patch {patch_size}, input {image_size}×{image_size} |
| text tower | CLIP text transformer, {text_layers} layers, width {text_width}, max length {text_max_length} |
| group tokens | {group_tokens} |
| decoder | width {decoder_width}, stage 1: {stage1} layer(s), stage 2: {stage2} layer(s){decoder_options} |
| parameters | {num_parameters} |
| base model | {base_model} |
{finetune_rows}
## Training data

{datasets}

## Training recipe

| | |
|---|---|
| steps | {num_steps} |
| images per device per step | {batch_size} (× {referents} referents sharing one image encoding) |
| gradient accumulation | {grad_accum} |
| optimizer | AdamW, weight decay {weight_decay} |
| learning rate | {lr} (CLIP towers: {backbone_lr}), cosine decay, {warmup} warm-up |
| mixed precision | {mixed_precision} |
| seed | {seed} |

## Evaluation

{evaluation}

## Citation

```bibtex
{citation}
```
"""


def _decoder_options(config) -> str:
    """The decoder options that depart from the paper's model, as a suffix of the card's decoder row."""
    options = []
    if config.decoder_token_stride > 1:
        stride = config.decoder_token_stride
        options.append(f"tokens pooled {stride}×{stride}")
    if config.pixel_decoder_channels:
        options.append(f"{config.pixel_decoder_channels}-channel pixel branch")
    if config.decoder_position_encoding is None:
        options.append("no position encoding")
    return "; " + ", ".join(options) if options else ""


PIPELINE_USAGE = """```python
import modeling_unires  # registers the model and the pipeline (or pass trust_remote_code=True)
from transformers import pipeline

segment = pipeline("referring-expression-segmentation", model="{model_id}")
results = segment(image, ["the red car", "the wheels of the blue bus"])
```"""

ADAPTER_USAGE = """This is a LoRA adapter (peft) for the UniRES model `{base_model}`: load the base, apply the adapter, and
merge it for inference at the base's speed.

```python
import modeling_unires  # registers the model and the pipeline (or pass trust_remote_code=True)
from peft import PeftModel
from transformers import AutoProcessor, pipeline
from modeling_unires import UniRESModel

base = UniRESModel.from_pretrained("{base_model}")
model = PeftModel.from_pretrained(base, "{model_id}").merge_and_unload()  # a plain UniRESModel
processor = AutoProcessor.from_pretrained("{model_id}")
segment = pipeline("referring-expression-segmentation", model=model, processor=processor)
results = segment(image, ["the red car", "the wheels of the blue bus"])
```

`python examples/evaluate_model.py --model {model_id} --dataset ...` loads and merges it the same way."""


def _finetune_rows(finetune: Optional[dict]) -> str:
    """The model table's rows on how the run fine-tuned (none for a full training run from a config)."""
    if not finetune:
        return ""
    way = finetune.get("way", "full")
    described = {"full": "full (every weight)", "frozen_towers": "CLIP towers frozen, the rest trained",
                 "lora": "LoRA (peft)"}.get(way, way)
    rows = [f"| fine-tuning | {described} |"]
    if finetune.get("trainable_parameters") is not None:
        rows.append(f"| trainable parameters | {finetune['trainable_parameters']:,} of "
                    f"{finetune.get('total_parameters', 0):,} |")
    if way == "lora":
        rows.append(f"| LoRA | r {finetune.get('r')}, alpha {finetune.get('alpha')}, dropout {finetune.get('dropout')},"
                    f" target modules: {finetune.get('target_modules')} (decoder and mask head) |")
    return "\n".join(rows) + "\n"


def _try_it(model_id: str, space_id: Optional[str]) -> str:
    """The card's "Try it in a browser" section: the Space when there is one, and the app's local command."""
    local = (
        "The UniRES app (upload an image, type expressions one per line, get the masks, their scores and a download) "
        f'runs locally:\n\n```bash\npip install "unires[app]"\npython examples/app.py --model {model_id}\n```'
    )
    if not space_id:
        return local
    return f"Online: the Space [{space_id}](https://huggingface.co/spaces/{space_id}). " + local


def write_model_card(
    folder,
    *,
    config,
    training_args,
    data_args,
    eval_results: Optional[dict] = None,
    num_steps: int = 0,
    base_model: Optional[str] = None,
    datasets: Optional[list[str]] = None,
    model_id: Optional[str] = None,
    num_parameters: Optional[int] = None,
    license: str = "apache-2.0",
    space_id: Optional[str] = None,
    mixed_precision: Optional[str] = None,
    finetune: Optional[dict] = None,
) -> str:
    """Write `folder/README.md` (YAML metadata + recipe + evaluation table) and return its text.

    `mixed_precision` is the precision the run used (the Accelerator's; `training_args.mixed_precision` is unset
    when the launcher chose it).

    The card links to the Gradio app: the Space `space_id` ("org/name") when there is one, and always the command
    that serves the app locally.

    `finetune` (from `unires.training.run`): the way (full, frozen_towers, lora), the trainable parameters and, for
    LoRA, its options and base model. A LoRA card is an adapter's (peft's metadata: `library_name: peft`,
    `base_model`, the `lora` tag), whose usage loads the base and merges the adapter.
    """
    datasets = datasets if datasets is not None else list(data_args.dataset)
    adapter = bool(finetune) and finetune.get("way") == "lora"
    if adapter:
        base_model = finetune.get("base_model") or base_model
    hub_base = base_model if base_model and not Path(base_model).exists() else None
    card_data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        pipeline_tag="image-segmentation",
        license=license,
        tags=["referring-expression-segmentation", "mres", "unires", "clip"] + (["lora", "peft"] if adapter else []),
        datasets=[d for d in datasets if "/" in d and not Path(d).exists()] or None,
        base_model=hub_base,
        base_model_relation="adapter" if adapter and hub_base else None,
    )
    groups = []
    if config.use_low_group_tokens:
        groups.append(f"{config.num_low_group_tokens} low-level")
    if config.use_high_group_tokens:
        groups.append(f"{config.num_high_group_tokens} high-level")
    if eval_results:
        evaluation = format_metrics_table(eval_results)
    else:
        evaluation = "Not evaluated."
    warmup = f"{training_args.warmup_steps} steps" if training_args.warmup_steps else f"{training_args.warmup_ratio:.0%}"
    text = TEMPLATE.format(
        card_data=card_data.to_yaml(),
        title_suffix=(" LoRA adapter" if adapter else "") + (f" ({model_id})" if model_id else ""),
        usage=(ADAPTER_USAGE if adapter else PIPELINE_USAGE).format(model_id=model_id or str(folder),
                                                                      base_model=base_model),
        finetune_rows=_finetune_rows(finetune),
        try_it=_try_it(model_id or str(folder), space_id),
        vision_layers=config.vision_config.num_hidden_layers,
        vision_width=config.vision_config.hidden_size,
        patch_size=config.vision_config.patch_size,
        image_size=config.vision_config.image_size,
        text_layers=config.text_config.num_hidden_layers,
        text_width=config.text_config.hidden_size,
        text_max_length=config.text_max_length,
        group_tokens=" + ".join(groups) or "none (ablation)",
        decoder_width=config.decoder_hidden_size,
        stage1=config.decoder_stage1_layers,
        stage2=config.decoder_stage2_layers if groups else 0,
        decoder_options=_decoder_options(config),
        num_parameters=f"{num_parameters:,}" if num_parameters else "n/a",
        base_model=f"`{base_model}`" if base_model else "trained from scratch",
        datasets="\n".join(f"- `{d}` (split `{data_args.train_split}`)" for d in datasets) or "- (not recorded)",
        num_steps=num_steps,
        batch_size=training_args.per_device_train_batch_size,
        referents=data_args.referents_per_image,
        grad_accum=training_args.gradient_accumulation_steps,
        weight_decay=training_args.weight_decay,
        lr=training_args.learning_rate,
        backbone_lr=training_args.backbone_learning_rate or training_args.learning_rate,
        warmup=warmup,
        mixed_precision=mixed_precision or training_args.mixed_precision or "no",
        seed=training_args.seed,
        evaluation=evaluation,
        citation=UNIRES_CITATION,
    )
    ModelCard(text).save(Path(folder) / "README.md")
    return text
