"""Inference shares the image's work among its expressions: the outputs are those of one expression at a time.

The plain model encodes each image once for all of its expressions; with fast inference (`enable_fast_inference`)
the decoder also makes the position terms of its projections once, the region filter's queries once per image, and
expressions go through in passes of `max_expressions_per_pass` (on the CPU at most `cpu_tokens_per_pass` expression x
patch tokens). The reference is the model run expression by expression with its image repeated and gradients enabled
(the training path, which shares nothing of this): same weights, equal logits to float rounding.
"""

import pytest
import torch

from modeling_unires import enable_fast_inference
from modeling_unires.configuration_unires import ABLATIONS, UniRESConfig
from tiny_models.unires import TINY_SENTENCES, tiny_model_and_processor

TEXTS = [["a red car", "the left wheel", "the blue bus"], ["a green tree", "the dog"], ["the window"]]


def _inputs(processor, image_size):
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size + 8, generator=generator) for size in (40, 56, 24)]
    inputs = processor(images=images, text=TEXTS, return_tensors="pt")
    assert inputs["pixel_values"].shape[-1] == image_size
    return inputs


def _random_biases(model, seed=3):
    """Non-zero biases and layer-norm parameters (initialised to 0 and 1): folding positions into a bias table must
    then keep every term."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or ("norm" in name and name.endswith("weight")):
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def _one_at_a_time(model, inputs):
    """Expression by expression, its image repeated, with gradients on (nothing shared, nothing cached)."""
    logits, scores = [], []
    with torch.enable_grad():
        for row, image in enumerate(inputs["image_indices"].tolist()):
            outputs = model(
                pixel_values=inputs["pixel_values"][image : image + 1],
                input_ids=inputs["input_ids"][row : row + 1],
                attention_mask=inputs["attention_mask"][row : row + 1],
                output_group_tokens=True,
            )
            logits.append(outputs.logits.detach())
            scores.append(outputs.group_token_scores)
    return torch.cat(logits), None if scores[0] is None else torch.cat(scores).detach()


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # the paper's decoder shape: stride 1, no pixel branch
        {"decoder_token_stride": 2, "pixel_decoder_channels": 4, "decoder_stage1_layers": 2},  # the demo's options
        {"use_low_group_tokens": False},
        {"decoder_position_encoding": None},
    ],
    ids=["paper", "demo-options", "high-only", "no-positions"],
)
@pytest.mark.parametrize("chunk, cpu_chunk", [("plain", None), (None, None), (2, None), (None, 4), (32, 1)])
def test_shared_inference_equals_one_expression_at_a_time(overrides, chunk, cpu_chunk):
    model, processor = tiny_model_and_processor(seed=1, **overrides)
    model.eval()
    _random_biases(model)
    inputs = _inputs(processor, model.config.image_size)
    expected_logits, expected_scores = _one_at_a_time(model, inputs)

    if chunk != "plain":
        patches = (model.config.image_size // model.config.vision_config.patch_size) ** 2
        enable_fast_inference(model, chunk, cpu_chunk and cpu_chunk * patches)  # cpu_chunk expressions a pass on CPU
    with torch.no_grad():
        embeddings = model.get_image_embeddings(inputs["pixel_values"])
        outputs = model(
            image_embeddings=embeddings, pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"], image_indices=inputs["image_indices"], output_group_tokens=True,
        )
        again = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})  # position terms cached (fast)
    torch.testing.assert_close(outputs.logits, expected_logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs.group_token_scores, expected_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again.logits, outputs.logits, rtol=1e-5, atol=1e-6)


def _expressions(count):
    """`count` distinct expressions of varied lengths (so that padding differs between rows of a pass)."""
    words = ["red", "left", "small", "big", "green", "brown", "blue", "yellow", "right"]
    return [
        f"{words[row % len(words)]} " * (row % 3) + TINY_SENTENCES[row % len(TINY_SENTENCES)] for row in range(count)
    ]


@pytest.mark.parametrize("setting", sorted(ABLATIONS))
@pytest.mark.parametrize("num_images", [1, 2])
def test_chunked_inference_of_every_ablation_equals_one_expression_at_a_time(setting, num_images):
    """Every Table-8 setting (`no_group_tokens` raised KeyError 'group_tokens' once a call needed two passes), for
    1 expression, exactly one pass, one pass + 1 and 100 expressions, on one image and spread over two."""
    per_pass = 4
    model, processor = tiny_model_and_processor(seed=4, **UniRESConfig.ablation_kwargs(setting))
    enable_fast_inference(model, max_expressions_per_pass=per_pass, cpu_tokens_per_pass=None)
    generator = torch.Generator().manual_seed(5)
    images = [torch.rand(3, 40, 48, generator=generator) for _ in range(num_images)]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
    text = processor(text=_expressions(100), return_tensors="pt")
    image_indices = torch.randint(num_images, (100,), generator=generator)
    expected, expected_scores = _one_at_a_time(
        model, {"pixel_values": pixel_values, "image_indices": image_indices, **text}
    )
    for count in (1, per_pass, per_pass + 1, 100):
        with torch.no_grad():
            outputs = model(
                pixel_values=pixel_values, input_ids=text["input_ids"][:count],
                attention_mask=text["attention_mask"][:count], image_indices=image_indices[:count],
                output_group_tokens=True,
            )
        torch.testing.assert_close(outputs.logits, expected[:count], rtol=1e-4, atol=1e-5, msg=f"{count} expressions")
        if expected_scores is None:
            assert outputs.group_tokens is None and outputs.group_token_scores is None
        else:
            torch.testing.assert_close(outputs.group_token_scores, expected_scores[:count], rtol=1e-4, atol=1e-5)
