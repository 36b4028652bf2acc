"""Tiny UniRES models, processors and tokenizers for tests and benchmarks (offline, built from configs in seconds)."""

from modeling_unires import UniRESConfig, UniRESImageProcessor, UniRESModel, UniRESProcessor
from modeling_unires.tokenization_local import build_clip_tokenizer

TINY_SENTENCES = [
    "the red car on the left",
    "left wheel of the blue bus",
    "the window of the small house",
    "the big green tree behind the house",
    "the right ear of the brown dog",
    "the yellow door of the car",
]


def tiny_tokenizer(texts=TINY_SENTENCES, text_max_length: int = 17):
    """A CLIP-style BPE tokenizer trained on `texts`."""
    return build_clip_tokenizer(texts, vocab_size=600, model_max_length=text_max_length)


def tiny_config_kwargs(image_size: int = 32, text_max_length: int = 17) -> dict:
    """`UniRESConfig` arguments of a tiny model: hidden 32, 2 ViT and 2 text layers, patch 8, 4 + 2 group tokens."""
    return dict(
        vision_config=dict(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            patch_size=8, image_size=image_size,
        ),
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        num_low_group_tokens=4,
        num_high_group_tokens=2,
        decoder_hidden_size=32,
        decoder_num_attention_heads=2,
        decoder_stage1_layers=1,
        decoder_stage2_layers=1,
        text_max_length=text_max_length,
    )


def tiny_config(tokenizer, image_size: int = 32, **overrides) -> UniRESConfig:
    """A tiny UniRES config (`tiny_config_kwargs`) sized to `tokenizer`; `overrides` replace top-level arguments."""
    kwargs = tiny_config_kwargs(image_size, overrides.pop("text_max_length", 17))
    kwargs.update(overrides)
    return UniRESConfig(**kwargs).fit_to_tokenizer(tokenizer)


def tiny_model_and_processor(seed: int = 0, **overrides):
    """`(model, processor)`: a randomly initialised tiny UniRES in eval mode and its processor."""
    import torch

    tokenizer = tiny_tokenizer()
    config = tiny_config(tokenizer, **overrides)
    torch.manual_seed(seed)
    model = UniRESModel(config).eval()
    processor = UniRESProcessor(
        UniRESImageProcessor(size=config.image_size, mask_threshold=config.mask_threshold),
        tokenizer,
        text_max_length=config.text_max_length,
    )
    return model, processor
