"""int8 through transformers' own API: `from_pretrained(..., quantization_config=TorchAoConfig(...))` and the pipeline.

"int8" is `TorchAoConfig(Int8PrepackedLinearConfig())`: every Linear's weight becomes an `Int8PrepackedWeight` (int8,
per-row scales, prepacked for `quantized::linear_dynamic`). On a tiny random model the int8 masks stay within the IoU
the benchmark states for the demo model (>= 0.98 mean against fp32), the pipeline takes the config through
`model_kwargs`, and `save_pretrained` of an int8 model says why it cannot. torchao's own int8 config stays reachable as
"int8-torchao".
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, pipeline

import modeling_unires  # noqa: F401  (registers UniRES and the task)
from modeling_unires.quantization_unires import QUANTIZE_CHOICES, quantization_config
from modeling_unires.testing_utils import tiny_model_and_processor

pytest.importorskip("torchao")

from modeling_unires.int8_linear import Int8PrepackedLinearConfig, Int8PrepackedWeight

TEXTS = [["a red car", "the left wheel", "the blue bus", "the dog"], ["a green tree", "the window of the house"]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, processor = tiny_model_and_processor(seed=3, decoder_token_stride=2, pixel_decoder_channels=4)
    folder = tmp_path_factory.mktemp("tiny-int8")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, processor


@pytest.fixture(scope="module")
def int8_model(saved):
    folder, _ = saved
    return AutoModel.from_pretrained(folder, quantization_config=quantization_config("int8")).eval()


def _masks(model, processor, images):
    inputs = processor(images=images, text=TEXTS, return_tensors="pt")
    sizes, indices = inputs.pop("original_sizes"), inputs["image_indices"]
    with torch.inference_mode():
        logits = model(**inputs).logits
    return processor.post_process_masks(logits, sizes, image_indices=indices), logits


def _mean_iou(expected, masks):
    ious = []
    for a, b in zip(expected, masks):
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    return float(np.mean(ious)), ious


def test_int8_from_pretrained_quantizes_every_linear_and_keeps_the_masks(saved, int8_model):
    folder, processor = saved
    fp32 = AutoModel.from_pretrained(folder).eval()
    linears = {name: module for name, module in int8_model.named_modules() if isinstance(module, torch.nn.Linear)}
    assert linears and all(isinstance(m.weight, Int8PrepackedWeight) for m in linears.values()), \
        [name for name, m in linears.items() if not isinstance(m.weight, Int8PrepackedWeight)]
    # The weights really are int8, one scale per output row, and dequantize to the float weights.
    fc1, fc1_fp32 = int8_model.decoder.stage1_layers[0].mlp.fc1, fp32.decoder.stage1_layers[0].mlp.fc1
    qweight = fc1.weight.int8_weight()
    assert qweight.dtype == torch.qint8 and qweight.int_repr().dtype == torch.int8
    assert qweight.q_per_channel_scales().shape == (fc1.out_features,)
    float_weight = fc1_fp32.weight.detach()
    torch.testing.assert_close(fc1.weight.dequantize(), float_weight, atol=float_weight.abs().max().item() / 127,
                               rtol=0)
    assert isinstance(int8_model.text_model.encoder.layers[0].mlp.fc1.weight, Int8PrepackedWeight)
    # Biases, layer norms and the group tokens stay in float.
    assert type(fc1.bias) is torch.nn.Parameter and fc1.bias.dtype == torch.float32
    assert int8_model.vision_encoder.group_tokens.low.dtype == torch.float32

    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 48, 64, generator=generator), torch.rand(3, 40, 40, generator=generator)]
    expected, fp32_logits = _masks(fp32, processor, images)
    masks, int8_logits = _masks(int8_model, processor, images)
    assert not torch.equal(int8_logits, fp32_logits)  # quantized indeed
    mean_iou, ious = _mean_iou(expected, masks)
    assert mean_iou >= 0.98, ious


def test_the_pipeline_takes_the_quantization_config(saved):
    folder, _ = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder),
                         model_kwargs={"quantization_config": quantization_config("int8")})
    assert type(segmenter.model.decoder.norm.weight) is torch.nn.Parameter  # layer norms stay in float
    assert isinstance(segmenter.model.mask_head.projection.weight, Int8PrepackedWeight)
    results = segmenter(np.zeros((30, 40, 3), dtype=np.uint8), ["a red car", "the dog"])
    assert [r["text"] for r in results] == ["a red car", "the dog"] and results[0]["mask"].size == (40, 30)


def test_an_int8_model_cannot_be_saved_and_says_so(int8_model, tmp_path):
    with pytest.raises(TypeError, match="save the float model and quantize it when loading"):
        int8_model.save_pretrained(tmp_path / "int8")


def test_the_prepacked_linear_matches_the_float_linear():
    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    torch.nn.init.normal_(linear.weight, std=0.05, generator=generator)
    torch.nn.init.normal_(linear.bias, std=0.1, generator=generator)
    weight = Int8PrepackedWeight.from_float(linear.weight)
    assert weight.shape == (48, 64) and weight.dtype == torch.float32
    x = torch.randn(2, 5, 64, generator=generator)  # any leading dimensions
    expected = F.linear(x, linear.weight, linear.bias).detach()
    out = F.linear(x, weight, linear.bias)
    assert out.shape == (2, 5, 48)
    assert (out - expected).norm() / expected.norm() < 0.02
    assert (F.linear(x, weight) - (expected - linear.bias.detach())).norm() / expected.norm() < 0.02
    # The kernel adds a packed copy of the bias: a changed bias is packed again.
    with torch.no_grad():
        linear.bias.add_(1.0)
    assert (F.linear(x, weight, linear.bias) - (expected + 1.0)).norm() / expected.norm() < 0.02
    assert F.linear(torch.zeros(0, 64), weight, linear.bias).shape == (0, 48)
    assert F.linear(x.double(), weight).dtype == torch.float64
    # Other operations see the dequantized weight; the packed weight is read-only.
    torch.testing.assert_close(weight * 1.0, weight.dequantize())
    with pytest.raises(NotImplementedError):
        weight.add_(1.0)


def test_quantize_choices():
    assert quantization_config("none") is None and quantization_config(None) is None
    assert set(QUANTIZE_CHOICES) == {"none", "int8", "int8-torchao", "int8-weights"}
    config = quantization_config("int8")
    assert type(config).__name__ == "TorchAoConfig" and isinstance(config.quant_type, Int8PrepackedLinearConfig)
    assert type(quantization_config("int8-torchao").quant_type).__name__ == "Int8DynamicActivationInt8WeightConfig"
    assert type(quantization_config("int8-weights")).__name__ == "TorchAoConfig"
    with pytest.raises(ValueError, match="int4"):
        quantization_config("int4")


def test_torchaos_own_int8_stays_reachable(saved):
    folder, _ = saved
    model = AutoModel.from_pretrained(folder, quantization_config=quantization_config("int8-torchao")).eval()
    assert type(model.decoder.stage1_layers[0].mlp.fc1.weight).__name__ == "Int8Tensor"
