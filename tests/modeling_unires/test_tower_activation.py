"""The CLIP towers are transformers' own: the plain model builds them unchanged, and fast inference only rebinds the
forward of their quick-GELU modules (computed in place at inference). Both towers give what transformers' CLIP
models give with the same weights, at inference and under training, and load the same state dict."""

import copy

import pytest
import torch
from transformers import CLIPTextModel, CLIPVisionModel
from transformers.activations import QuickGELUActivation

from modeling_unires import enable_fast_inference
from tiny_models.unires import tiny_model_and_processor


def _towers():
    model, _ = tiny_model_and_processor(seed=4)
    vision = CLIPVisionModel._from_config(model.config.vision_config).eval()
    text = CLIPTextModel._from_config(model.config.text_config).eval()
    vision.load_state_dict(model.vision_model.state_dict())
    text.load_state_dict(model.text_model.state_dict())
    return model, vision, text


def _activations(tower):
    return [module.activation_fn for module in tower.modules() if hasattr(module, "activation_fn")]


def test_plain_towers_are_transformers_clip_and_fast_ones_rebind_the_activation_only():
    model, vision, text = _towers()
    fast = enable_fast_inference(copy.deepcopy(model))
    for plain_tower, fast_tower, stock in ((model.vision_model, fast.vision_model, vision),
                                           (model.text_model, fast.text_model, text)):
        plain_activations, fast_activations = _activations(plain_tower), _activations(fast_tower)
        assert plain_activations and all(type(fn) is QuickGELUActivation for fn in plain_activations)
        assert all("forward" not in fn.__dict__ for fn in plain_activations)
        # Same modules, same class: only the instances' forward is the in-place one.
        assert all(type(fn) is QuickGELUActivation and "forward" in fn.__dict__ for fn in fast_activations)
        assert plain_tower.state_dict().keys() == fast_tower.state_dict().keys() == stock.state_dict().keys()


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_plain_and_fast_towers_equal_transformers_clip(grad):
    model, vision, text = _towers()
    fast = enable_fast_inference(copy.deepcopy(model))
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32, generator=generator)
    ids = torch.randint(0, model.config.text_config.vocab_size, (3, 17), generator=generator)
    with torch.set_grad_enabled(grad):
        stock_outputs = (vision(pixels).last_hidden_state, text(input_ids=ids).last_hidden_state)
        for ours in (model, fast):
            outputs = (ours.vision_model(pixels).last_hidden_state, ours.text_model(input_ids=ids).last_hidden_state)
            for got, expected in zip(outputs, stock_outputs):
                if grad:  # under autograd the fast activation is the plain one: bit for bit
                    assert torch.equal(got, expected)
                else:
                    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if grad:
        fast.vision_model(pixels).last_hidden_state.sum().backward()
        assert fast.vision_model.encoder.layers[0].mlp.fc1.weight.grad is not None
