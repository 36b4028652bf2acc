"""Tiny CLIPSeg and SAM 3 models with their processors, built from configs offline (tests, `--quick` benchmarks).

The CLIPSeg config factory is the baseline's own (`unires.baselines.clipseg`, which trains one from scratch). Each
takes a locally trained CLIP tokenizer (`tiny_models.unires.tiny_tokenizer`) and sizes its text tower
to it; weights are random.
"""

from __future__ import annotations

import torch

from unires.baselines.clipseg import _text_ids, clipseg_config, clipseg_processor  # noqa: F401 (re-exported)


def tiny_clipseg(tokenizer=None, image_size: int = 32, seed: int = 0):
    """`(model, processor)`: a random `CLIPSegForImageSegmentation` (hidden 32, 2 layers, patch 8) in eval mode."""
    from transformers import CLIPSegForImageSegmentation

    from tiny_models.unires import tiny_tokenizer

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

    from tiny_models.unires import tiny_tokenizer

    tokenizer = tokenizer or tiny_tokenizer(text_max_length=32)
    torch.manual_seed(seed)
    model = Sam3Model(sam3_config(tokenizer, image_size=image_size)).eval()
    return model, sam3_processor(tokenizer, image_size)
