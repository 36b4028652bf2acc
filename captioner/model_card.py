"""The model card written beside a trained captioner adapter."""
from __future__ import annotations

import os

from huggingface_hub import ModelCard, ModelCardData

from .box_prompts import PAPER_BOX_FORMAT, PROMPT_TEMPLATES, format_box


def write_model_card(output_dir, model_args, data_args, training_args, sources, weights, losses, box_format=PAPER_BOX_FORMAT,
                     mixed_precision=None, repo_id=None) -> str:
    """Write ``README.md`` (YAML metadata + usage) into ``output_dir`` and return its path.

    ``mixed_precision`` is the precision the run used (the Accelerator's, when the launcher chose it); ``repo_id``
    the Hub repo the adapter is pushed to.
    """
    data = ModelCardData(library_name="peft", base_model=model_args.base_model, license="apache-2.0",
                         tags=["lora", "dense-captioning", "image-text-to-text", "mres"], pipeline_tag="image-text-to-text")
    templates = "\n".join(f"- {name}: `{text}`" for name, text in PROMPT_TEMPLATES.items())
    mixture = ", ".join(f"{name} (weight {weights.get(name, 1.0):g})" for name in sources)
    final = f"{losses[-1][1]:.4f} at step {losses[-1][0]}" if losses else "n/a"
    if box_format.scale is None:
        whole_image = "coordinates are pixels of the image as the processor resizes it"
    else:
        whole_image = f"the whole image is `{format_box((0, 0, box_format.scale, box_format.scale), box_format)}`"
    content = f"""---
{data.to_yaml()}
---

# Dense captioner (LoRA adapter for `{model_args.base_model}`)

Describes the region inside a box at three granularities (image, object, part), as the data
engine of MRES-32M ("Unveiling Parts Beyond Objects", CVPR 2024) needs. Boxes are written in the
prompt in the base model's own grounding format ({box_format.name}); {whole_image}.

Prompts:
{templates}

## Training
- data: {mixture}
- LoRA r={model_args.lora_r}, alpha={model_args.lora_alpha}, dropout={model_args.lora_dropout}, targets `{model_args.lora_target_modules}`; vision tower {"frozen" if model_args.freeze_vision_tower else "trained"}
- lr {training_args.learning_rate}, {training_args.lr_scheduler_type} schedule, batch {training_args.per_device_train_batch_size} x {training_args.gradient_accumulation_steps} accumulation per device, mixed precision {mixed_precision or training_args.mixed_precision or "no"}
- final training loss: {final}

## Use
```python
from captioner import DenseCaptioner
captioner = DenseCaptioner.from_pretrained("{repo_id or training_args.hub_model_id or output_dir}")  # merges the adapter
captioner.caption(image, [[x, y, w, h], ...], granularity="object")
```
"""
    path = os.path.join(output_dir, "README.md")
    ModelCard(content).save(path)
    return path
