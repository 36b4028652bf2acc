"""A tiny Qwen3-VL (the default base model's architecture) built offline, for tests and demos.

Everything is made locally: a byte-level BPE tokenizer trained on a few sentences with the
Qwen special tokens, a Qwen-style chat template, the Qwen2-VL image processor at tiny sizes,
and a randomly initialised ``Qwen3VLForConditionalGeneration`` of ~150k parameters.
"""
from __future__ import annotations

import json
import os

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    Qwen2Tokenizer,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    Qwen3VLVideoProcessor,
)

# Qwen2's split pattern (contractions, words, single digits, punctuation, runs of newlines, spaces).
QWEN_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

# Same shape of conversation as Qwen's template: <|im_start|>role\n ... <|im_end|>\n
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = (
    "Describe the whole image in one sentence. Describe the object in the region with a short referring "
    "expression. Name the object part in the region as '<part> of <object>'. (0,0),(999,999) 0123456789 "
    "a dog on the grass, the man on the left, a red car parked by the house, the left ear of the brown dog, "
    "wheel of car, window of house, head of cat, leg of chair, user assistant system\n\n"
    "paragraphs\n\nare split by blank lines, as in Qwen's vocabulary where two newlines are one token\n\n"
)


def build_tiny_tokenizer(vocab_size: int = 320) -> Qwen2Tokenizer:
    """A byte-level BPE with Qwen's special tokens, trained in milliseconds on a few sentences."""
    bpe = Tokenizer(models.BPE())
    # Qwen2Tokenizer's own pre-tokenizer, so that merges learned here (e.g. two newlines as one token) apply there
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[SPECIAL_TOKENS[0]], show_progress=False
    )
    bpe.train_from_iterator([_CORPUS] * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )


def build_tiny_processor(image_side: int = 32) -> Qwen3VLProcessor:
    """Tokenizer + image/video processors; images are resized to about ``image_side``² pixels."""
    tokenizer = build_tiny_tokenizer()
    size = {"shortest_edge": image_side * image_side, "longest_edge": 4 * image_side * image_side}
    vision = dict(size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**vision),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**vision),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model(processor: Qwen3VLProcessor, hidden_size: int = 32, seed: int = 0) -> Qwen3VLForConditionalGeneration:
    """A randomly initialised two-layer Qwen3-VL matching ``processor``'s vocabulary."""
    ids = processor.tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(processor.tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=512,
            initializer_range=0.3,  # a frozen random lm_head with the usual 0.02 caps how peaked logits can get
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=hidden_size,
            num_position_embeddings=16,
            deepstack_visual_indexes=[0],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    return model.eval()


def build_tiny_qwen2_family(family: str = "qwen2_5_vl", hidden_size: int = 32, seed: int = 0):
    """``(model, processor)``: a tiny random Qwen2-VL (``"qwen2_vl"``) or Qwen2.5-VL (``"qwen2_5_vl"``),
    the other base families the captioner writes boxes for (14-pixel patches, 2x2 merge)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
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


def save_tiny_captioner(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny base model + processor to ``path`` (loadable by name like a Hub checkpoint)."""
    processor = build_tiny_processor()
    model = build_tiny_model(processor, seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return os.fspath(path)
