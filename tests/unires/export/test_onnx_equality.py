"""The ONNX export run by ONNX Runtime equals the PyTorch model (issue 31): logits to 1e-4 and masks at the threshold,
for 1, 7 and 33 expressions over several images; wrong inputs are refused naming them; a mask does not depend on the
other images and expressions of the call (fp32 and int8); int8 stays close to fp32; the pipeline and the evaluation
adapter take the ONNX Runtime model."""

import json

import numpy as np
import pytest
import torch
from onnx_export_helpers import THRESHOLD, expressions, sample_images

from unires.export.onnx_export import IMAGE_ENCODER_FILE, QUERY_DECODER_FILE, quantized_name


def _inputs(processor, num_images, num_expressions, offset=0):
    """Processor outputs for `num_expressions` expressions spread over `num_images` images (in order)."""
    images = sample_images(num_images, seed=num_images + num_expressions)
    counts = [num_expressions // num_images + (i < num_expressions % num_images) for i in range(num_images)]
    texts = expressions(num_expressions, offset)
    per_image, start = [], 0
    for count in counts:
        per_image.append(texts[start : start + count])
        start += count
    return processor(images=images, text=per_image)


def _model_inputs(inputs):
    return {name: inputs[name] for name in ("pixel_values", "input_ids", "attention_mask", "image_indices")}


@pytest.mark.parametrize("num_images, num_expressions", [(1, 1), (3, 7), (4, 33)])
def test_fp32_logits_and_masks_equal_pytorch(exported, ort_models, num_images, num_expressions):
    model, processor, _ = exported
    inputs = _inputs(processor, num_images, num_expressions)
    with torch.no_grad():
        expected = model(**_model_inputs(inputs)).logits
    got = ort_models["fp32"](**inputs).logits  # `original_sizes` is accepted, as by UniRESModel
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape == (num_expressions, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert torch.equal(got.sigmoid() > THRESHOLD, expected.sigmoid() > THRESHOLD)
    sizes = inputs["original_sizes"].tolist()
    ours = processor.post_process_masks(got, sizes, image_indices=inputs["image_indices"])
    theirs = processor.post_process_masks(expected, sizes, image_indices=inputs["image_indices"])
    # At the original sizes the logits are interpolated, and a pixel whose value lands within float rounding of the
    # threshold may fall either side (at the model's resolution, above, the masks are equal): any pixel that differs
    # is one of those.
    for row, (a, b) in enumerate(zip(ours, theirs)):
        if not np.array_equal(a, b):
            resized = torch.nn.functional.interpolate(expected[row][None, None], size=a.shape, mode="bilinear",
                                                      align_corners=False)[0, 0].sigmoid().numpy()
            assert np.abs(resized[a != b] - THRESHOLD).max() < 1e-6 and (a != b).sum() <= 2, row
    assert 0.05 < np.mean([mask.mean() for mask in ours]) < 0.95  # masks that could disagree


def test_image_embeddings_once_then_many_expressions(exported, ort_models):
    model, processor, _ = exported
    ort_model = ort_models["fp32"]
    inputs = _inputs(processor, 2, 5)
    embeddings = ort_model.get_image_embeddings(inputs["pixel_values"])
    with torch.no_grad():
        torch.testing.assert_close(embeddings, model.get_image_embeddings(inputs["pixel_values"]), atol=1e-4, rtol=0)
        expected = model(**_model_inputs(inputs)).logits
    text = {name: inputs[name] for name in ("input_ids", "attention_mask", "image_indices")}
    # The pixel branch reads the images too: from pixel_values, or from the encoder's pixel_features.
    from_pixels = ort_model(image_embeddings=embeddings, pixel_values=inputs["pixel_values"], **text).logits
    features = ort_model.encode_images(inputs["pixel_values"])
    from_features = ort_model(image_embeddings=features["image_embeddings"],
                              pixel_features=features["pixel_features"], **text).logits
    torch.testing.assert_close(from_pixels, expected, atol=1e-4, rtol=0)
    assert torch.equal(from_pixels, from_features)
    out = ort_model(**inputs, output_image_embeddings=True)
    assert torch.equal(out.image_embeddings, embeddings)
    assert torch.equal(ort_model(**inputs, return_dict=False)[0], out.logits)


@pytest.mark.parametrize("kind", ["fp32", "int8"])
def test_a_mask_does_not_depend_on_the_rest_of_the_call(exported, ort_models, kind):
    _, processor, _ = exported
    ort_model = ort_models[kind]
    inputs = _inputs(processor, 3, 9)
    together = ort_model(**inputs).logits
    images = inputs["image_indices"].tolist()
    for row in range(len(images)):
        alone = ort_model(pixel_values=inputs["pixel_values"][images[row] : images[row] + 1],
                          input_ids=inputs["input_ids"][row : row + 1],
                          attention_mask=inputs["attention_mask"][row : row + 1]).logits[0]
        assert torch.equal(alone.sigmoid() > THRESHOLD, together[row].sigmoid() > THRESHOLD), (kind, row)
        if kind == "int8":  # one image and one expression per call: bit for bit
            assert torch.equal(alone, together[row])
        else:  # fp32 graphs batch the rows; their kernels may round the last bit differently
            torch.testing.assert_close(alone, together[row], atol=1e-5, rtol=0)


def test_int8_graphs_are_per_channel_int8_and_agree_with_fp32(exported, ort_models):
    import onnx

    _, processor, folder = exported
    config = json.loads((folder / "onnx_config.json").read_text())
    assert config["quantized"]["per_channel"] is True
    for name in (IMAGE_ENCODER_FILE, QUERY_DECODER_FILE):
        graph = onnx.load(str(folder / quantized_name(name))).graph
        ops = {node.op_type for node in graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops, name
        # Per-channel: the weight scales are vectors, one per output channel.
        scales = [i for i in graph.initializer if i.name.endswith("_scale") and "MatMul" not in i.name]
        assert any(len(scale.dims) == 1 and scale.dims[0] > 1 for scale in scales), name
    decoder = onnx.load(str(folder / quantized_name(QUERY_DECODER_FILE))).graph
    float_weights = {i.name for i in decoder.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert any("alignment_visual_projection" in name for name in float_weights)  # kept in float, as in PyTorch

    inputs = _inputs(processor, 4, 33)
    fp32 = ort_models["fp32"](**inputs).logits.sigmoid() > THRESHOLD
    int8 = ort_models["int8"](**inputs).logits.sigmoid() > THRESHOLD
    intersection = (fp32 & int8).flatten(1).sum(1).float()
    union = (fp32 | int8).flatten(1).sum(1).float()
    iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))
    # A random tiny model's logits sit within +-0.1 of the threshold: int8 rounding moves some of its pixels across.
    assert iou.mean() >= 0.8 and (fp32 == int8).float().mean() >= 0.9, (iou.mean(), iou.min())


BAD_INPUTS = [
    (dict(pixel_values=torch.zeros(1, 3, 40, 40)), "pixel_values has shape (1, 3, 40, 40)"),
    (dict(pixel_values=torch.zeros(3, 32, 32)), "pixel_values has shape (3, 32, 32)"),
    (dict(pixel_values=torch.zeros(0, 3, 32, 32)), "pixel_values has shape (0, 3, 32, 32)"),
    (dict(pixel_values=torch.zeros(1, 3, 32, 32, dtype=torch.long)), "pixel_values must be floating point"),
    (dict(input_ids=torch.zeros(2, 12, dtype=torch.long)), "input_ids has shape (2, 12)"),
    (dict(input_ids=torch.zeros(2, 17)), "input_ids must be integers"),
    (dict(input_ids=torch.full((2, 17), 10**6)), "input_ids hold token id 1000000"),
    (dict(attention_mask=torch.ones(3, 17, dtype=torch.long)), "attention_mask has shape (3, 17)"),
    (dict(image_indices=torch.tensor([0, 0, 1])), "image_indices has shape (3,), expected (2,)"),
    (dict(image_indices=torch.tensor([0, 2])), "image_indices [0, 2] out of range for 2 images"),
    (dict(image_indices=torch.tensor([0.0, 1.0])), "image_indices must be integers"),
    (dict(image_indices=None, input_ids=torch.zeros(3, 17, dtype=torch.long),
          attention_mask=torch.ones(3, 17, dtype=torch.long)), "Got 2 images and 3 expressions"),
    (dict(pixel_values=None), "Pass `pixel_values` or `image_embeddings`"),
    (dict(input_ids=None), "`input_ids` (the tokenised expressions) are required"),
    (dict(pixel_values=None, image_embeddings=torch.zeros(2, 10, 32)), "image_embeddings has shape (2, 10, 32)"),
    (dict(pixel_values=None, image_embeddings=torch.zeros(2, 22, 32)), "has a pixel branch"),
    (dict(pixel_values=torch.zeros(1, 3, 32, 32), image_embeddings=torch.zeros(2, 22, 32)),
     "pixel_values hold 1 images but image_embeddings 2"),
    (dict(pixel_values=None, image_embeddings=torch.zeros(2, 22, 32), pixel_features=torch.zeros(1, 4, 32, 32)),
     "pixel_features has shape (1, 4, 32, 32), expected (2, 4, 32, 32)"),
]


@pytest.mark.parametrize("change, message", BAD_INPUTS, ids=[message[:40] for _, message in BAD_INPUTS])
def test_wrong_shapes_and_counts_are_named(ort_models, change, message):
    good = dict(pixel_values=torch.zeros(2, 3, 32, 32), input_ids=torch.zeros(2, 17, dtype=torch.long),
                attention_mask=torch.ones(2, 17, dtype=torch.long), image_indices=torch.tensor([0, 1]))
    with pytest.raises(ValueError) as error:
        ort_models["fp32"](**{**good, **change})
    assert message in str(error.value)


def test_a_misspelled_argument_is_a_type_error(ort_models):
    with pytest.raises(TypeError, match="attention_masks"):
        ort_models["fp32"](pixel_values=torch.zeros(1, 3, 32, 32), input_ids=torch.zeros(1, 17, dtype=torch.long),
                           attention_masks=torch.ones(1, 17, dtype=torch.long))


def test_loading_refuses_what_is_not_there(exported, tmp_path):
    import onnxruntime

    from unires.export import ORTModelForReferringSegmentation

    with pytest.raises(OSError, match="onnx_config.json"):
        ORTModelForReferringSegmentation.from_pretrained(tmp_path)
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(ValueError, match=r"\['CUDAExecutionProvider'\] are not available"):
            ORTModelForReferringSegmentation.from_pretrained(exported[2], provider="CUDAExecutionProvider")


def test_the_pipeline_takes_the_onnx_runtime_model(exported, ort_models):
    from transformers import pipeline

    import modeling_unires

    model, processor, _ = exported
    images = sample_images(2, seed=5)
    texts = [expressions(3), expressions(2, offset=3)]
    # The pipeline's defaults (on a CPU: the fast image processor; the fast PyTorch layers are UniRESModel's only).
    ours = pipeline(modeling_unires.PIPELINE_TASK, model=ort_models["fp32"], processor=processor)(
        images, texts, mask_format="numpy")
    theirs = pipeline(modeling_unires.PIPELINE_TASK, model=model, processor=processor)(images, texts,
                                                                                         mask_format="numpy")
    for a, b in zip(sum(ours, []), sum(theirs, [])):
        assert a["text"] == b["text"] and np.array_equal(a["mask"], b["mask"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_the_evaluation_adapter_onnx(exported):
    from unires.evaluation.registry import adapter_of
    from unires.evaluation.segmenters import UniRESSegmenter, load_segmenter

    model, processor, folder = exported
    segmenter = load_segmenter("onnx", str(folder))
    assert adapter_of("onnx").segmenter_class() is type(segmenter)
    images = sample_images(2, seed=7)
    texts = [expressions(2), expressions(3, offset=2)]
    ours = segmenter.masks(images, texts)
    theirs = UniRESSegmenter(model, processor).masks(images, texts)
    assert all(np.array_equal(a, b) for mine, ref in zip(ours, theirs) for a, b in zip(mine, ref))
    conventions = segmenter.conventions()
    assert conventions["model_type"] == "onnx" and conventions["providers"] == ["CPUExecutionProvider"]
    assert conventions["threshold"] == THRESHOLD


def test_opset_23_export_of_a_model_without_pixel_branch_equals_pytorch(tmp_path):
    """The paper's shape (no pixel branch, no token stride) at opset 23, where attention is ONNX's fused `Attention`
    op (with the decoder's `(batch, 1, 1, keys)` masks made explicit over the queries)."""
    import onnx

    from tiny_models.unires import tiny_model_and_processor
    from unires.export import ORTModelForReferringSegmentation, export_onnx

    model, processor = tiny_model_and_processor(seed=1, mask_threshold=THRESHOLD)
    export_onnx(model, processor, tmp_path, opset=23)
    ops = {node.op_type for node in onnx.load(str(tmp_path / QUERY_DECODER_FILE)).graph.node}
    assert "Attention" in ops and "Softmax" not in ops
    ort_model = ORTModelForReferringSegmentation.from_pretrained(tmp_path)
    assert ort_model.encoder_outputs == ["image_embeddings"]
    inputs = _inputs(processor, 3, 7)
    with torch.no_grad():
        expected = model(**_model_inputs(inputs)).logits
    got = ort_model(**inputs).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    assert torch.equal(got.sigmoid() > THRESHOLD, expected.sigmoid() > THRESHOLD)
