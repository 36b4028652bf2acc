"""int8 through transformers' own API: `from_pretrained(..., quantization_config=TorchAoConfig(...))` and the pipeline.

On a tiny random model the int8 masks stay within the IoU the benchmark states for the demo model (>= 0.98 mean
against fp32), and the pipeline takes the config through `model_kwargs`.
"""

import numpy as np
import pytest
import torch
from transformers import AutoModel, pipeline

import modeling_unires  # noqa: F401  (registers UniRES and the task)
from modeling_unires.quantization_unires import QUANTIZE_CHOICES, quantization_config
from modeling_unires.testing_utils import tiny_model_and_processor

pytest.importorskip("torchao")

TEXTS = [["a red car", "the left wheel", "the blue bus", "the dog"], ["a green tree", "the window of the house"]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, processor = tiny_model_and_processor(seed=3, decoder_token_stride=2, pixel_decoder_channels=4)
    folder = tmp_path_factory.mktemp("tiny-int8")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, processor


def _masks(model, processor, images):
    inputs = processor(images=images, text=TEXTS, return_tensors="pt")
    sizes, indices = inputs.pop("original_sizes"), inputs["image_indices"]
    with torch.inference_mode():
        logits = model(**inputs).logits
    return processor.post_process_masks(logits, sizes, image_indices=indices), logits


def test_int8_from_pretrained_quantizes_the_linears_and_keeps_the_masks(saved):
    folder, processor = saved
    fp32 = AutoModel.from_pretrained(folder).eval()
    int8 = AutoModel.from_pretrained(folder, quantization_config=quantization_config("int8")).eval()
    # Every projection of the towers and the decoder is int8 (a torchao tensor subclass), the group tokens are not.
    weight = int8.decoder.stage1_layers[0].mlp.fc1.weight
    assert type(weight).__name__ == "Int8Tensor", type(weight)
    assert type(int8.text_model.encoder.layers[0].mlp.fc1.weight).__name__ == "Int8Tensor"
    assert int8.vision_encoder.group_tokens.low.dtype == torch.float32

    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 48, 64, generator=generator), torch.rand(3, 40, 40, generator=generator)]
    expected, fp32_logits = _masks(fp32, processor, images)
    masks, int8_logits = _masks(int8, processor, images)
    assert not torch.equal(int8_logits, fp32_logits)  # quantized indeed
    ious = []
    for a, b in zip(expected, masks):
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    assert np.mean(ious) >= 0.98, ious


def test_the_pipeline_takes_the_quantization_config(saved):
    folder, _ = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder),
                         model_kwargs={"quantization_config": quantization_config("int8")})
    assert type(segmenter.model.decoder.norm.weight).__name__ == "Parameter"  # layer norms stay in float
    assert type(segmenter.model.mask_head.projection.weight).__name__ == "Int8Tensor"
    results = segmenter(np.zeros((30, 40, 3), dtype=np.uint8), ["a red car", "the dog"])
    assert [r["text"] for r in results] == ["a red car", "the dog"] and results[0]["mask"].size == (40, 30)


def test_quantize_choices():
    assert quantization_config("none") is None and quantization_config(None) is None
    assert type(quantization_config("int8-weights")).__name__ == "TorchAoConfig"
    assert "int8" in QUANTIZE_CHOICES
    with pytest.raises(ValueError, match="int4"):
        quantization_config("int4")
