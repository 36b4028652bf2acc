"""The one place where the captioner's defaults are named (light: the command lines' --help reads them).

Qwen3-VL-2B-Instruct: a current, small (2B) open vision-language model that transformers
supports natively (``Qwen3VLForConditionalGeneration`` behind ``AutoModelForImageTextToText``),
released under Apache-2.0, and trained to ground boxes in coordinates normalised to
[0, 1000) -- the same convention as the paper's [0, 999] integer boxes, so the box prompt
is close to what the base model already understands.  Any other
``AutoModelForImageTextToText`` checkpoint with a chat template works by name.
"""

DEFAULT_BASE_MODEL = "Qwen/Qwen3-VL-2B-Instruct"

# Language-model projections that LoRA adapts by default (attention and MLP of Llama/Qwen-style
# decoders; the names differ in other families, hence configurable).
DEFAULT_LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Sub-module names under which LVLMs in transformers keep their vision tower and projector.
VISION_MODULE_NAMES = ("visual", "vision_tower", "vision_model", "vision_encoder", "multi_modal_projector")

# Cap on the tokens of one image: Qwen recommends 256-1,280 (its processor allows 16,384); larger images are resized down.
DEFAULT_MAX_IMAGE_TOKENS = 1280
