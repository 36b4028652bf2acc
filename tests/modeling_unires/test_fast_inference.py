"""The plain model against the same weights with fast inference enabled (`enable_fast_inference`): two objects, one
definition. Masks bit-equal and logits equal to float rounding, for every ablation setting, 1 / several / many
expressions (across pass boundaries) and several images; under autograd the fast model is the plain one, bit for bit;
the state dict and saving are untouched."""

import copy
import json

import numpy as np
import pytest
import torch

from modeling_unires import disable_fast_inference, enable_fast_inference
from modeling_unires.configuration_unires import ABLATIONS, UniRESConfig
from modeling_unires.fast_inference_unires import FastInferenceOptions, is_fast_inference_enabled
from tiny_models.unires import TINY_SENTENCES, tiny_model_and_processor

SETTINGS = {
    **{name: UniRESConfig.ablation_kwargs(name) for name in sorted(ABLATIONS)},
    "demo-options": {"decoder_token_stride": 2, "pixel_decoder_channels": 4, "decoder_stage1_layers": 2},
    "no-positions": {"decoder_position_encoding": None},
}


def _expressions(count):
    """`count` distinct expressions of varied lengths (so that padding differs between rows of a pass)."""
    words = ["red", "left", "small", "big", "green", "brown", "blue", "yellow", "right"]
    return [
        f"{words[row % len(words)]} " * (row % 3) + TINY_SENTENCES[row % len(TINY_SENTENCES)] for row in range(count)
    ]


def _randomise_biases(model, seed=3):
    """Non-zero biases and layer-norm parameters (initialised to 0 and 1), so that folding the positions into a bias
    table has every term to keep."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or ("norm" in name and name.endswith("weight")):
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))


def _plain_and_fast(setting, seed=1, **fast_options):
    plain, processor = tiny_model_and_processor(seed=seed, **SETTINGS[setting])
    _randomise_biases(plain)
    fast = enable_fast_inference(copy.deepcopy(plain), **fast_options)
    return plain, fast, processor


def _run(model, processor, inputs, sizes):
    with torch.inference_mode():
        outputs = model(**inputs, output_group_tokens=True)
    masks = processor.post_process_masks(outputs.logits, sizes, image_indices=inputs["image_indices"])
    return outputs, masks


def _assert_same_results(plain_run, fast_run, what):
    (plain_outputs, plain_masks), (fast_outputs, fast_masks) = plain_run, fast_run
    torch.testing.assert_close(fast_outputs.logits, plain_outputs.logits, rtol=1e-5, atol=1e-5, msg=what)
    assert all(np.array_equal(a, b) for a, b in zip(fast_masks, plain_masks)), what
    if plain_outputs.group_token_scores is None:
        assert fast_outputs.group_tokens is None and fast_outputs.group_token_scores is None
    else:
        torch.testing.assert_close(fast_outputs.group_token_scores, plain_outputs.group_token_scores,
                                   rtol=1e-5, atol=1e-6, msg=what)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_fast_inference_gives_the_plain_models_masks(setting):
    """1, several and many (100, in passes of 4: exactly one pass, one pass + 1, many passes) expressions, on one
    image and spread over three images of different sizes."""
    plain, fast, processor = _plain_and_fast(setting, max_expressions_per_pass=4)
    generator = torch.Generator().manual_seed(5)
    images = [torch.rand(3, 40 + 8 * index, 48, generator=generator) for index in range(3)]
    many = _expressions(100)
    for num_images in (1, 3):
        for count in (1, 3, 4, 5, 100):
            per_image = [many[index:count:num_images] for index in range(num_images)]
            inputs = processor(images=images[:num_images], text=per_image, return_tensors="pt")
            sizes = inputs.pop("original_sizes")
            what = f"{setting}: {count} expressions on {num_images} image(s)"
            _assert_same_results(_run(plain, processor, inputs, sizes), _run(fast, processor, inputs, sizes), what)


def test_expressions_out_of_image_order_and_shared_image_embeddings():
    """`image_indices` in any order, and the image encoded once (`image_embeddings` with `pixel_values` for the pixel
    branch), as the app calls the model."""
    plain, fast, processor = _plain_and_fast("demo-options", max_expressions_per_pass=2)
    generator = torch.Generator().manual_seed(6)
    pixel_values = processor(images=[torch.rand(3, 40, 48, generator=generator) for _ in range(2)],
                             return_tensors="pt")["pixel_values"]
    text = processor(text=_expressions(7), return_tensors="pt")
    image_indices = torch.tensor([1, 0, 1, 1, 0, 0, 1])
    logits = []
    for model in (plain, fast):
        with torch.inference_mode():
            embeddings = model.get_image_embeddings(pixel_values)
            logits.append(model(image_embeddings=embeddings, pixel_values=pixel_values, image_indices=image_indices,
                                **text).logits)
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(logits[1] >= 0.5, logits[0] >= 0.5)


def _training_step(model, inputs, labels):
    model.train()
    model.zero_grad()
    torch.manual_seed(0)
    outputs = model(**inputs, labels=labels)
    outputs.loss.backward()
    return outputs.logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("setting", ["full", "demo-options"])
def test_under_autograd_the_fast_model_is_the_plain_one(setting):
    """The fast layers call their plain forward when gradients are on: a training step gives bit-equal logits and
    gradients, and the model is not split into passes (in training mode or with gradients)."""
    plain, fast, processor = _plain_and_fast(setting, max_expressions_per_pass=1)
    images = [torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    inputs = processor(images=images, text=[_expressions(3), _expressions(2)], return_tensors="pt")
    inputs.pop("original_sizes")
    labels = (torch.rand(5, 32, 32, generator=torch.Generator().manual_seed(8)) > 0.5).float()
    plain_logits, plain_grads = _training_step(plain, inputs, labels)
    fast_logits, fast_grads = _training_step(fast, inputs, labels)
    assert torch.equal(fast_logits, plain_logits)
    assert fast_grads.keys() == plain_grads.keys() and len(plain_grads) > 100
    assert all(torch.equal(fast_grads[name], plain_grads[name]) for name in plain_grads)
    # Evaluation mode with gradients on (e.g. a saliency map): the plain forward again, bit for bit.
    plain.eval(), fast.eval()
    assert torch.equal(fast(**inputs).logits, plain(**inputs).logits)


def test_fast_inference_keeps_the_state_dict_class_and_saved_checkpoint(tmp_path):
    plain, fast, _ = _plain_and_fast("full")
    assert type(fast) is type(plain) and is_fast_inference_enabled(fast) and not is_fast_inference_enabled(plain)
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    assert plain_state.keys() == fast_state.keys()
    assert all(torch.equal(plain_state[name], fast_state[name]) for name in plain_state)
    plain.save_pretrained(tmp_path / "plain")
    fast.save_pretrained(tmp_path / "fast")
    plain_config = json.loads((tmp_path / "plain" / "config.json").read_text())
    fast_config = json.loads((tmp_path / "fast" / "config.json").read_text())
    assert fast_config == plain_config and fast_config["architectures"] == ["UniRESModel"]
    assert (tmp_path / "fast" / "model.safetensors").read_bytes() == (tmp_path / "plain" / "model.safetensors").read_bytes()


def test_disable_fast_inference_gives_the_plain_forwards_back():
    plain, fast, processor = _plain_and_fast("full")
    inputs = processor(images=[torch.rand(3, 32, 32)], text=[_expressions(3)], return_tensors="pt")
    inputs.pop("original_sizes")
    with torch.inference_mode():
        fast(**inputs)  # fills the projection cache
        disable_fast_inference(fast)
        assert not is_fast_inference_enabled(fast)
        assert not any(name in module.__dict__ for module in fast.modules()
                       for name in ("forward", "_decode", "_alignment_per_patch", "_fast_projection_cache"))
        assert torch.equal(fast(**inputs).logits, plain(**inputs).logits)


def test_expressions_per_pass_on_cpu_and_elsewhere():
    """The CPU cap (expressions x patch tokens) applies on the CPU only, together with `max_expressions_per_pass`;
    `None` or 0 lifts a limit."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    # (limit, cpu tokens, patch tokens per expression) -> (expressions per pass on the CPU, elsewhere)
    cases = [((32, 3600, 900), (4, 32)), ((32, 3600, 144), (25, 32)), ((2, 3600, 900), (2, 2)),
             ((None, 3600, 900), (4, None)), ((None, 3600, 5000), (1, None)), ((0, None, 900), (None, None))]
    for (limit, cpu_tokens, patches), expected in cases:
        options = FastInferenceOptions(limit, cpu_tokens)
        assert (options.expressions_per_pass(cpu, patches), options.expressions_per_pass(cuda, patches)) == expected


def test_bad_options_and_models_are_named():
    model, _ = tiny_model_and_processor()
    with pytest.raises(ValueError, match=r"max_expressions_per_pass=-1 is invalid"):
        enable_fast_inference(model, max_expressions_per_pass=-1)
    with pytest.raises(ValueError, match=r"cpu_tokens_per_pass=1.5 is invalid"):
        enable_fast_inference(model, cpu_tokens_per_pass=1.5)
    with pytest.raises(TypeError, match=r"takes a UniRESModel, got Linear"):
        enable_fast_inference(torch.nn.Linear(2, 2))


def test_cached_position_terms_follow_the_weights():
    """A weight changed in place after an inference call is seen by the next call (the cache is keyed on it)."""
    plain, fast, processor = _plain_and_fast("full", seed=2)
    inputs = processor(images=[torch.rand(3, 40, 48)], text=[_expressions(3)], return_tensors="pt")
    inputs.pop("original_sizes")
    with torch.no_grad():
        fast(**inputs)
        for model in (plain, fast):
            for layer in model.decoder.stage1_layers:
                layer.self_attn.q_proj.weight.mul_(1.5)
                layer.self_attn.k_proj.bias.add_(0.25)
                layer.self_attn.v_proj.bias.add_(-0.25)
                layer.cross_attn.q_proj.weight.mul_(0.5)
                layer.cross_attn.q_proj.bias.add_(0.5)
        torch.testing.assert_close(fast(**inputs).logits, plain(**inputs).logits, rtol=1e-5, atol=1e-5)
