"""The referring-expression-segmentation pipeline on real JPEG/PNG files, batched and unbatched."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import modeling_unires  # noqa: F401  (registers the task)
from modeling_unires.testing_utils import tiny_model_and_processor


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unires")
    model, processor = tiny_model_and_processor(seed=2)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    rng = np.random.default_rng(0)
    jpeg, png = folder / "photo.jpg", folder / "drawing.png"
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(jpeg, quality=90)
    Image.fromarray(rng.integers(0, 256, (44, 30, 4), dtype=np.uint8), mode="RGBA").save(png)
    return folder, model, processor, str(jpeg), str(png)


def test_pipeline_on_jpeg_and_png(saved):
    folder, model, processor, jpeg, png = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder))
    for path, (height, width) in ((jpeg, (37, 53)), (png, (44, 30))):
        results = segmenter(path, ["the red car", "left wheel of the bus"])
        assert [r["text"] for r in results] == ["the red car", "left wheel of the bus"]
        for result in results:
            assert isinstance(result["mask"], Image.Image) and result["mask"].size == (width, height)
            assert 0.0 <= result["score"] <= 1.0
            assert result["rle"]["size"] == [height, width]

    # Same masks as running the processor and the model by hand.
    inputs = processor(images=Image.open(jpeg), text=["the red car", "left wheel of the bus"])
    sizes = inputs.pop("original_sizes")
    with torch.no_grad():
        logits = model(**inputs).logits
    expected = processor.post_process_masks(logits, sizes)
    results = segmenter(jpeg, ["the red car", "left wheel of the bus"], mask_format="numpy")
    for mask, result in zip(expected, results):
        assert result["mask"].dtype == np.bool_ and np.array_equal(mask, result["mask"])


def test_pipeline_batched_equals_unbatched(saved):
    folder, _, _, jpeg, png = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder))
    array = np.asarray(Image.open(jpeg).convert("RGB"))
    images = [jpeg, png, array]
    texts = [["the red car", "the window"], "the dog", ["the left wheel"]]
    batched = segmenter(images, texts, batch_size=2, mask_format="numpy")
    assert isinstance(batched[0], list) and isinstance(batched[1], dict) and len(batched[2]) == 1
    single = [segmenter(image, text, mask_format="numpy") for image, text in zip(images, texts)]
    flatten = lambda results: [r for item in results for r in (item if isinstance(item, list) else [item])]
    for one, other in zip(flatten(batched), flatten(single)):
        assert one["text"] == other["text"] and np.array_equal(one["mask"], other["mask"])
        assert one["score"] == pytest.approx(other["score"], abs=1e-5)


def test_pipeline_bad_input(saved):
    folder, _, _, jpeg, png = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder))
    with pytest.raises(ValueError, match="expression 1 is empty"):
        segmenter(jpeg, ["the car", " "])
    with pytest.raises(ValueError, match="2 images and 1 text entries"):
        segmenter([jpeg, png], ["the car"])
    with pytest.raises(ValueError, match="mask_format"):
        segmenter(jpeg, "the car", mask_format="svg")
