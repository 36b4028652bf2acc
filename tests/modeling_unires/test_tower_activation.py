"""The CLIP towers' quick GELU runs in place at inference (`UniRESQuickGELU`): the towers still give what
transformers' own CLIP models give with the same weights, at inference and under training, and load the same
state dict."""

import pytest
import torch
from transformers import CLIPTextModel, CLIPVisionModel
from transformers.activations import QuickGELUActivation

from modeling_unires.modeling_unires import UniRESQuickGELU
from modeling_unires.testing_utils import tiny_model_and_processor


def _towers():
    model, _ = tiny_model_and_processor(seed=4)
    vision = CLIPVisionModel._from_config(model.config.vision_config).eval()
    text = CLIPTextModel._from_config(model.config.text_config).eval()
    vision.load_state_dict(model.vision_model.state_dict())
    text.load_state_dict(model.text_model.state_dict())
    return model, vision, text


def test_towers_use_the_in_place_activation_with_an_unchanged_state_dict():
    model, vision, text = _towers()
    for ours, stock in ((model.vision_model, vision), (model.text_model, text)):
        activations = [module.activation_fn for module in ours.modules() if hasattr(module, "activation_fn")]
        assert activations and all(type(fn) is UniRESQuickGELU for fn in activations)
        assert all(type(m.activation_fn) is QuickGELUActivation for m in stock.modules() if hasattr(m, "activation_fn"))
        assert ours.state_dict().keys() == stock.state_dict().keys()


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_towers_equal_transformers_clip(grad):
    model, vision, text = _towers()
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32, generator=generator)
    ids = torch.randint(0, model.config.text_config.vocab_size, (3, 17), generator=generator)
    with torch.set_grad_enabled(grad):
        pairs = [
            (model.vision_model(pixels).last_hidden_state, vision(pixels).last_hidden_state),
            (model.text_model(input_ids=ids).last_hidden_state, text(input_ids=ids).last_hidden_state),
        ]
    for ours, stock in pairs:
        torch.testing.assert_close(ours, stock, rtol=1e-5, atol=1e-5)
    if grad:
        pairs[0][0].sum().backward()
        assert model.vision_model.encoder.layers[0].mlp.fc1.weight.grad is not None
