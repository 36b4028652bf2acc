"""The referring-expression-segmentation pipeline on real JPEG/PNG files, batched and unbatched."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import modeling_unires  # noqa: F401  (registers the task)
from modeling_unires.image_loading_unires import open_image
from tiny_models.unires import tiny_model_and_processor


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
        results = segmenter(path, ["the red car", "left wheel of the bus"], return_rle=True)
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
        assert sorted(result) == ["box", "mask", "score", "text"]  # RLE only when asked for


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
    with pytest.raises(ValueError, match=r"2 image\(s\) and 1 text entries"):
        segmenter([jpeg, png], ["the car"])
    with pytest.raises(ValueError, match="mask_format"):
        segmenter(jpeg, "the car", mask_format="svg")


def test_pipeline_validates_threshold_batch_size_and_pairing(saved):
    folder, _, _, jpeg, _ = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder))
    for threshold in (1.5, -0.2, "0.5", float("nan"), True):
        with pytest.raises(ValueError, match=r"threshold=.* is invalid: expected a probability"):
            segmenter(jpeg, "the car", threshold=threshold)
    for batch_size in (-1, 0, 1.5):
        with pytest.raises(ValueError, match=r"batch_size=.* is invalid"):
            segmenter([jpeg], [["the car"]], batch_size=batch_size)
    with pytest.raises(ValueError, match=r"list of 1 image\(s\) and one string: .*one entry .* per image"):
        segmenter([jpeg], "the car")


def test_pipeline_names_an_unreachable_url_and_a_missing_file(saved):
    folder, _, _, _, _ = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder))
    url = "http://127.0.0.1:9/no-such-image.png"  # the discard port: refused at once, no network needed
    with pytest.raises(ValueError, match=r"image 0: cannot download 'http://127.0.0.1:9/no-such-image.png'"):
        segmenter(url, "the car")
    with pytest.raises(ValueError, match=r"image 0: No image file at '.*missing.png'"):
        segmenter(str(folder / "missing.png"), "the car")


def test_a_mistyped_image_path_reads_as_a_missing_file_and_data_uris_work(saved):
    # Case 7 of issue 20: a string that is no file, no http(s) URL and no data URI is a missing file, not
    # transformers' "Incorrect image source ... base64 ... Incorrect padding".
    import base64
    import io

    folder, _, _, jpeg, _ = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder))
    for typo in ("photos/dgo.jpg", "dgo.jpg", "photo"):
        with pytest.raises(ValueError, match=rf"image 0: No image file at '{typo}'") as error:
            segmenter(typo, "the car")
        assert "base64" not in str(error.value) and "padding" not in str(error.value)
    buffer = io.BytesIO()
    Image.open(jpeg).save(buffer, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    from_uri = segmenter(uri, ["the red car"], mask_format="numpy")
    from_image = segmenter(Image.open(jpeg), ["the red car"], mask_format="numpy")
    assert np.array_equal(from_uri[0]["mask"], from_image[0]["mask"])
    with pytest.raises(ValueError, match=r"image 0: the data URI 'data:image/png;base64,...' holds invalid base64"):
        segmenter("data:image/png;base64,@@@", "the car")


def test_a_path_and_the_same_opened_image_give_the_same_masks(saved, tmp_path):
    # RGBA, LA, transparent-palette and 16-bit PNGs: transformers' load_image converts to RGB before our own mode
    # handling, which used to make the path differ from the opened image by hundreds of pixels.
    folder, _, _, _, _ = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder))
    rng = np.random.default_rng(3)
    rgba = Image.fromarray(rng.integers(0, 256, (40, 36, 4), dtype=np.uint8), mode="RGBA")
    la = rgba.convert("LA")
    palette = Image.fromarray(rng.integers(0, 4, (40, 36), dtype=np.uint8), mode="P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9])
    palette.info["transparency"] = 0
    sixteen = Image.fromarray(rng.integers(0, 65536, (40, 36), dtype=np.uint16))
    for name, image in {"rgba": rgba, "la": la, "palette": palette, "16bit": sixteen}.items():
        path = tmp_path / f"{name}.png"
        image.save(path)
        from_path = segmenter(str(path), ["the red car", "the window"], mask_format="numpy")
        from_image = segmenter(Image.open(path), ["the red car", "the window"], mask_format="numpy")
        for one, other in zip(from_path, from_image):
            assert np.array_equal(one["mask"], other["mask"]), name
            assert one["score"] == pytest.approx(other["score"]), name
    # The 16-bit image is scaled to 8 bits (round(v / 257), the one pixel rule), not clipped to white.
    pixels = segmenter.processor.image_processor.preprocess(open_image(tmp_path / "16bit.png"), return_tensors="pt")
    assert float(pixels["pixel_values"].std()) > 0.5
    # The image processor takes decoded images only: opening paths and URLs is the pipeline's job.
    with pytest.raises(ValueError, match=r"image 0 is a path or URL .*16bit.png.*open it first"):
        segmenter.processor.image_processor.preprocess(str(tmp_path / "16bit.png"))


def test_pipeline_refuses_normalised_tensors_and_nan_logits(saved, monkeypatch):
    folder, model, _, jpeg, _ = saved
    segmenter = pipeline("referring-expression-segmentation", model=str(folder))
    normalised = torch.randn(3, 32, 32)  # already CLIP-normalised: negative values
    with pytest.raises(ValueError, match=r"image 0 is a float array with negative or NaN values.*already normalised"):
        segmenter(normalised, "the car")

    original_forward = segmenter.model.forward

    def nan_for_second_expression(*args, **kwargs):
        outputs = original_forward(*args, **kwargs)
        outputs.logits[1] = float("nan")
        return outputs

    monkeypatch.setattr(segmenter.model, "forward", nan_for_second_expression)
    with pytest.raises(ValueError, match=r"NaN mask logits for the expression\(s\) \['the window'\]"):
        segmenter(jpeg, ["the red car", "the window"])


def test_long_expressions_warn_once_by_name_without_the_tokenizer_indexing_warning(saved, caplog):
    folder, _, processor, jpeg, _ = saved
    long_expression = " ".join(["the red car"] * 20)
    with caplog.at_level("WARNING"):
        processor.tokenize([long_expression])
    messages = [record.getMessage() for record in caplog.records]
    assert any("expression 0" in m and "truncated" in m for m in messages)
    assert not any("indexing errors" in m or "longer than the specified maximum" in m for m in messages)


def test_post_process_masks_batches_per_size_and_returns_scores(saved):
    _, _, processor, _, _ = saved
    logits = torch.randn(5, 12, 12) * 3
    sizes = [(20, 30), (7, 9), (20, 30), (20, 30), (7, 9)]
    masks, scores = processor.post_process_masks(logits, sizes, return_scores=True)
    for row, (mask, score, size) in enumerate(zip(masks, scores, sizes)):
        probabilities = torch.nn.functional.interpolate(
            logits[row][None, None], size=size, mode="bilinear", align_corners=False)[0, 0].sigmoid()
        expected = (probabilities > processor.image_processor.mask_threshold).numpy()
        assert mask.shape == size and np.array_equal(mask, expected)
        inside = probabilities[torch.from_numpy(expected)]
        assert score == pytest.approx(float(inside.mean()) if expected.any() else float(probabilities.max()), abs=1e-6)
    empty, empty_scores = processor.post_process_masks(torch.full((1, 4, 4), -9.0), [(4, 4)], return_scores=True)
    assert not empty[0].any() and empty_scores[0] == pytest.approx(float(torch.sigmoid(torch.tensor(-9.0))))
    bad = logits.clone()
    bad[3, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"NaN mask logits for mask\(s\) \[3\]"):
        processor.post_process_masks(bad, sizes)


def test_post_process_masks_names_the_expressions_behind_nan_logits(saved):
    from modeling_unires.image_processing_unires import NaNLogitsError

    _, _, processor, _, _ = saved
    logits = torch.randn(4, 12, 12)
    logits[1, 3, 3] = logits[3, 0, 0] = float("nan")
    texts = ["the red car", "the window", "the dog", "its left ear"]
    with pytest.raises(NaNLogitsError, match=r"NaN mask logits for the expression\(s\) \['the window', 'its left ear'\] "
                       r"\(mask\(s\) \[1, 3\]\)") as caught:
        processor.post_process_masks(logits, [(20, 30), (7, 9)], image_indices=[0, 0, 1, 1], texts=texts)
    assert caught.value.indices == [1, 3] and caught.value.texts == ["the window", "its left ear"]
    with pytest.raises(ValueError, match="4 mask logits but 3 texts"):
        processor.post_process_masks(logits, [(20, 30)], texts=texts[:3])


def test_post_process_masks_takes_the_sizes_of_images_with_image_indices(saved):
    _, _, processor, _, _ = saved
    logits = torch.randn(3, 12, 12)
    per_image = processor.post_process_masks(logits, [(20, 30), (7, 9)], image_indices=torch.tensor([1, 0, 1]))
    per_mask = processor.post_process_masks(logits, [(7, 9), (20, 30), (7, 9)])
    assert all(np.array_equal(a, b) for a, b in zip(per_image, per_mask))
    with pytest.raises(ValueError, match=r"image_indices\[2\]=2 is out of range for 2"):
        processor.post_process_masks(logits, [(20, 30), (7, 9)], image_indices=[0, 1, 2])


def test_the_pipeline_runs_the_fast_path_on_a_cpu_with_the_plain_paths_masks(saved):
    """By default on a CPU the pipeline enables fast inference on its model and the fast post-processing; with
    `fast_inference=False` it keeps both plain. Same masks, bit for bit, for one and for many expressions (in
    passes: `max_expressions_per_pass` is the pipeline's parameter)."""
    from modeling_unires import UniRESImageProcessorFast
    from modeling_unires.fast_inference_unires import is_fast_inference_enabled

    folder, _, _, jpeg, png = saved
    fast = pipeline("referring-expression-segmentation", model=str(folder), max_expressions_per_pass=3)
    plain = pipeline("referring-expression-segmentation", model=str(folder), fast_inference=False)
    assert is_fast_inference_enabled(fast.model) and fast.model.fast_inference_options.max_expressions_per_pass == 3
    assert type(fast.processor.image_processor) is UniRESImageProcessorFast
    assert not is_fast_inference_enabled(plain.model) and type(plain.processor.image_processor).__name__ == (
        "UniRESImageProcessor")
    texts = ["the red car", "left wheel of the bus", "the window", "the dog", "a green tree", "the big house", "a cat"]
    for expressions in (texts[:1], texts):
        fast_results = fast([jpeg, png], [expressions, expressions[::-1]], mask_format="numpy")
        plain_results = plain([jpeg, png], [expressions, expressions[::-1]], mask_format="numpy")
        for fast_image, plain_image in zip(fast_results, plain_results):
            for got, expected in zip(fast_image, plain_image):
                assert got["text"] == expected["text"] and np.array_equal(got["mask"], expected["mask"])
                assert got["score"] == pytest.approx(expected["score"], rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match=r"fast_inference='yes' is invalid"):
        pipeline("referring-expression-segmentation", model=str(folder), fast_inference="yes")
