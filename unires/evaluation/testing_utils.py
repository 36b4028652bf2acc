"""Tiny CLIPSeg and SAM 3 models with their processors, built from configs offline (tests, `--quick` benchmarks).

Each takes a locally trained CLIP tokenizer (`modeling_unires.testing_utils.tiny_tokenizer`) and sizes its text tower
to it; weights are random.
"""

from __future__ import annotations

import torch
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def _text_ids(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def clipseg_config(tokenizer=None, image_size: int = 32, patch_size: int = 8, hidden_size: int = 32, layers: int = 2,
                   text_hidden_size: int = 32, text_layers: int = 2, heads: int = 2, intermediate_size: int = 64,
                   reduce_dim: int = 16, projection_dim: int = 32, refined: bool = True, text_max_length: int = 77):
    """A `CLIPSegConfig` of the given tower sizes; `extract_layers` are the vision layers CLIPSeg taps (its 3 of
    ViT-B's 12, 3 6 9, scaled: 1 2 3 for 4 layers)."""
    from transformers import CLIPSegConfig

    text = dict(hidden_size=text_hidden_size, intermediate_size=text_hidden_size * intermediate_size // hidden_size,
                num_hidden_layers=text_layers, num_attention_heads=heads, max_position_embeddings=text_max_length)
    if tokenizer is not None:
        text.update(_text_ids(tokenizer))
    vision = dict(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=layers,
                  num_attention_heads=heads, image_size=image_size, patch_size=patch_size)
    extract = tuple(layers * k // 4 for k in (1, 2, 3)) if layers >= 4 else tuple(range(layers))
    return CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=projection_dim, reduce_dim=reduce_dim,
                         extract_layers=extract, use_complex_transposed_convolution=refined and patch_size >= 4,
                         decoder_num_attention_heads=heads, decoder_intermediate_size=reduce_dim * 2)


def clipseg_processor(tokenizer, image_size: int):
    from transformers import CLIPSegProcessor, ViTImageProcessor

    image_processor = ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=OPENAI_CLIP_MEAN,
                                        image_std=OPENAI_CLIP_STD, resample=3)
    return CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_clipseg(tokenizer=None, image_size: int = 32, seed: int = 0):
    """`(model, processor)`: a random `CLIPSegForImageSegmentation` (hidden 32, 2 layers, patch 8) in eval mode."""
    from transformers import CLIPSegForImageSegmentation

    from modeling_unires.testing_utils import tiny_tokenizer

    tokenizer = tokenizer or tiny_tokenizer(text_max_length=77)
    torch.manual_seed(seed)
    model = CLIPSegForImageSegmentation(clipseg_config(tokenizer, image_size=image_size)).eval()
    return model, clipseg_processor(tokenizer, image_size)


def sam3_config(tokenizer=None, image_size: int = 56, hidden_size: int = 32, layers: int = 2, heads: int = 2,
                num_queries: int = 8, text_hidden_size: int = 32, text_layers: int = 2):
    """A `Sam3Config` with a ViT of patch 14 at `image_size` (a multiple of 56), one layer per DETR/geometry part."""
    from transformers import Sam3Config

    side = image_size // 14
    vit = dict(model_type="sam3_vit_model", hidden_size=hidden_size, intermediate_size=hidden_size * 2,
               num_hidden_layers=layers, num_attention_heads=heads, image_size=image_size, patch_size=14,
               window_size=max(1, side // 2), global_attn_indexes=[layers - 1], pretrain_image_size=image_size)
    text = dict(hidden_size=text_hidden_size, intermediate_size=text_hidden_size * 2, projection_dim=text_hidden_size,
                num_hidden_layers=text_layers, num_attention_heads=heads, max_position_embeddings=32)
    if tokenizer is not None:
        text.update(_text_ids(tokenizer))
    small = dict(hidden_size=hidden_size, num_layers=1, num_attention_heads=heads, intermediate_size=hidden_size * 2)
    return Sam3Config(
        vision_config=dict(backbone_config=vit, fpn_hidden_size=hidden_size,
                           backbone_feature_sizes=[[side * 4, side * 4], [side * 2, side * 2], [side, side]]),
        text_config=text, geometry_encoder_config=small, detr_encoder_config=small,
        detr_decoder_config=dict(small, num_queries=num_queries),
        mask_decoder_config=dict(hidden_size=hidden_size, num_attention_heads=heads),
    )


def sam3_processor(tokenizer, image_size: int):
    from transformers import Sam3ImageProcessor, Sam3Processor

    mask_side = image_size // 14 * 4
    image_processor = Sam3ImageProcessor(size={"height": image_size, "width": image_size},
                                         mask_size={"height": mask_side, "width": mask_side})
    return Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_sam3(tokenizer=None, image_size: int = 56, seed: int = 0):
    """`(model, processor)`: a random `Sam3Model` (hidden 32, 2 ViT layers, 8 queries) in eval mode."""
    from transformers import Sam3Model

    from modeling_unires.testing_utils import tiny_tokenizer

    tokenizer = tokenizer or tiny_tokenizer(text_max_length=32)
    torch.manual_seed(seed)
    model = Sam3Model(sam3_config(tokenizer, image_size=image_size)).eval()
    return model, sam3_processor(tokenizer, image_size)
