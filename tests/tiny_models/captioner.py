"""The captioner's tiny models for tests and benchmarks, built offline with random weights.

The Qwen3-VL one (the default base model's architecture) is the offline recipe's, `captioner.tiny`, which ships
because users run it; this module adds the other base families the captioner writes boxes for.
"""
from __future__ import annotations

import torch

from captioner.tiny import CHAT_TEMPLATE, build_tiny_model, build_tiny_processor, build_tiny_tokenizer, save_tiny_captioner

__all__ = ["CHAT_TEMPLATE", "build_tiny_model", "build_tiny_processor", "build_tiny_qwen2_family", "build_tiny_tokenizer",
           "save_tiny_captioner"]


def build_tiny_qwen2_family(family: str = "qwen2_5_vl", hidden_size: int = 32, seed: int = 0):
    """``(model, processor)``: a tiny random Qwen2-VL (``"qwen2_vl"``) or Qwen2.5-VL (``"qwen2_5_vl"``),
    the other base families the captioner writes boxes for (14-pixel patches, 2x2 merge)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    if family not in ("qwen2_vl", "qwen2_5_vl"):
        raise ValueError(f"family must be 'qwen2_vl' or 'qwen2_5_vl', got {family!r}.")
    tokenizer = build_tiny_tokenizer()
    vision = dict(size={"shortest_edge": 28 * 28, "longest_edge": 4 * 28 * 28}, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor_class = Qwen2_5_VLProcessor if family == "qwen2_5_vl" else Qwen2VLProcessor
    processor = processor_class(image_processor=Qwen2VLImageProcessor(**vision), tokenizer=tokenizer,
                                video_processor=Qwen2VLVideoProcessor(**vision), chat_template=CHAT_TEMPLATE)
    ids = tokenizer.convert_tokens_to_ids
    text = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, initializer_range=0.3,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]},
                pad_token_id=ids("<|endoftext|>"))
    common = dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, depth=2, num_heads=2)
    if family == "qwen2_5_vl":
        config_class, model_class = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        vision_config = dict(hidden_size=32, intermediate_size=64, out_hidden_size=hidden_size, window_size=56, fullatt_block_indexes=[1], **common)
    else:
        config_class, model_class = Qwen2VLConfig, Qwen2VLForConditionalGeneration
        vision_config = dict(embed_dim=32, hidden_size=hidden_size, mlp_ratio=2, **common)
    config = config_class(text_config=text, vision_config=vision_config, image_token_id=ids("<|image_pad|>"),
                          video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
                          vision_end_token_id=ids("<|vision_end|>"))
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    return model.eval(), processor


