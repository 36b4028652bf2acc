"""UniRESProcessor / UniRESImageProcessor / build_clip_tokenizer: formats, round trips and bad input."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from transformers import AutoProcessor, AutoTokenizer

from modeling_unires import UniRESImageProcessor, UniRESProcessor, build_clip_tokenizer
from tiny_models.unires import TINY_SENTENCES, tiny_model_and_processor


@pytest.fixture(scope="module")
def processor():
    return tiny_model_and_processor()[1]


def _ellipse(height, width):
    rows, cols = np.mgrid[:height, :width]
    return ((rows - height / 2) / (height / 3)) ** 2 + ((cols - width / 2) / (width / 3)) ** 2 <= 1


def _normalised_white(processor):
    image_processor = processor.image_processor
    return (1.0 - np.asarray(image_processor.image_mean)) / np.asarray(image_processor.image_std)


def test_mask_round_trip_comes_back_at_original_size(processor):
    mask = _ellipse(45, 67)
    labels = processor.preprocess_masks([mask])
    assert labels.shape == (1, 32, 32) and labels.dtype == torch.float32
    assert set(labels.unique().tolist()) <= {0.0, 1.0}
    logits = labels * 20 - 10  # confident logits of the resized mask
    (back,) = processor.post_process_masks(logits, [(45, 67)])
    assert back.shape == (45, 67) and back.dtype == np.bool_
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou >= 0.95


def test_rle_output_decodes_to_the_boolean_mask(processor):
    logits = torch.randn(2, 32, 32)
    masks = processor.post_process_masks(logits, [(20, 30), (40, 10)], threshold=0.5)
    rles = processor.post_process_masks(logits, [(20, 30), (40, 10)], threshold=0.5, return_rle=True)
    for mask, rle in zip(masks, rles):
        assert rle["size"] == list(mask.shape) and isinstance(rle["counts"], str)
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), mask)


def test_threshold_default_is_035(processor):
    logit_of_04 = float(np.log(0.4 / 0.6))
    (mask,) = processor.post_process_masks(torch.full((1, 32, 32), logit_of_04), [(8, 8)])
    assert mask.all()  # 0.4 > 0.35
    (mask,) = processor.post_process_masks(torch.full((1, 32, 32), logit_of_04), [(8, 8)], threshold=0.5)
    assert not mask.any()


def test_one_image_many_expressions_and_parallel_lists(processor):
    image = Image.new("RGB", (50, 40), (255, 0, 0))
    one = processor(images=image, text=["the red car", "the window", "left wheel"])
    assert one["pixel_values"].shape == (1, 3, 32, 32)
    assert one["input_ids"].shape == (3, 17) and one["attention_mask"].shape == (3, 17)
    assert one["original_sizes"].tolist() == [[40, 50]]
    parallel = processor(images=[image, Image.new("RGB", (10, 20))], text=["the red car", "the window"])
    assert parallel["pixel_values"].shape == (2, 3, 32, 32)
    assert parallel["original_sizes"].tolist() == [[40, 50], [20, 10]]
    # Padding is CLIP's: end-of-text ids after the sentence, masked out.
    tokenizer = processor.tokenizer
    ids, attention = one["input_ids"][0], one["attention_mask"][0]
    assert ids[0] == tokenizer.bos_token_id and (ids[attention == 0] == tokenizer.pad_token_id).all()
    assert ids[attention.sum() - 1] == tokenizer.eos_token_id


def test_masks_become_labels(processor):
    image = Image.new("RGB", (64, 48))
    masks = [np.zeros((48, 64), dtype=np.uint8), np.full((48, 64), 255, dtype=np.uint8)]
    masks[0][:24] = 255
    out = processor(images=image, text=["the top", "everything"], masks=masks)
    assert out["labels"].shape == (2, 32, 32)
    assert out["labels"][0, :16].eq(1).all() and out["labels"][0, 16:].eq(0).all() and out["labels"][1].eq(1).all()


def _exif_rotated_jpeg(path):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    image.save(path, exif=exif)
    return Image.open(path)


def test_image_modes_and_formats(processor, tmp_path):
    white = _normalised_white(processor)
    rgba = Image.new("RGBA", (30, 30), (0, 0, 0, 0))  # fully transparent: composited on white
    sixteen_bit = Image.fromarray(np.full((12, 14), 65535, dtype=np.uint16))
    palette = Image.new("RGB", (16, 16), (255, 255, 255)).convert("P")
    cases = {
        "L": (Image.new("L", (25, 35), 255), (35, 25)),
        "RGBA": (rgba, (30, 30)),
        "P": (palette, (16, 16)),
        "CMYK": (Image.new("CMYK", (20, 10), (0, 0, 0, 0)), (10, 20)),
        "I;16": (sixteen_bit, (12, 14)),
        "uint16 array": (np.full((9, 11, 3), 65535, dtype=np.uint16), (9, 11)),
        "float array": (np.ones((8, 6, 3), dtype=np.float32), (8, 6)),
        "torch CHW": (torch.ones(3, 7, 5), (7, 5)),
    }
    for name, (image, size) in cases.items():
        out = processor.image_processor(image)
        assert out["pixel_values"].shape == (1, 3, 32, 32), name
        assert out["original_sizes"].tolist() == [list(size)], name
        np.testing.assert_allclose(out["pixel_values"][0].mean((1, 2)).numpy(), white, atol=1e-4, err_msg=name)
    rotated = processor.image_processor(_exif_rotated_jpeg(tmp_path / "rotated.jpg"))
    assert rotated["original_sizes"].tolist() == [[40, 20]]  # stored 40x20 (w x h), displayed 20 wide, 40 high


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 2, 3), (3, 5, 4), (1, 3, 1), (4, 1, 3)])
def test_a_narrow_channels_first_tensor_is_read_channels_first(processor, shape):
    # Case 9 of issue 20: transformers' rule (`infer_channel_dimension_format`): a leading 1, 3 or 4 is the channel
    # axis even when the last side is 1, 3 or 4 too; (3, 1, 1) is one pixel, not a 1x3 image.
    pixels = torch.rand(shape)
    out = processor.image_processor(pixels)
    assert out["original_sizes"].tolist() == [[shape[1], shape[2]]]
    channels_last = pixels.permute(1, 2, 0).numpy()
    expected = processor.image_processor(channels_last[..., 0] if shape[0] == 1 else channels_last)
    torch.testing.assert_close(out["pixel_values"], expected["pixel_values"])


def test_channels_last_tensors_and_arrays_stay_channels_last(processor):
    assert processor.image_processor(torch.rand(5, 7, 3))["original_sizes"].tolist() == [[5, 7]]
    assert processor.image_processor(np.zeros((3, 5, 4), dtype=np.uint8))["original_sizes"].tolist() == [[3, 5]]


def test_processor_loads_and_runs_without_pycocotools_until_rle_is_asked(processor, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pycocotools(name, *args, **kwargs):
        if name.split(".")[0] == "pycocotools":
            raise ImportError("blocked")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pycocotools)
    logits = torch.randn(1, 8, 8)
    (mask,) = processor.post_process_masks(logits, [(8, 8)])
    assert mask.shape == (8, 8)
    with pytest.raises(ImportError, match=r"pip install pycocotools.*return_rle=False"):
        processor.post_process_masks(logits, [(8, 8)], return_rle=True)


def test_huge_image_is_resized(processor):
    out = processor(images=np.zeros((3000, 4000, 3), dtype=np.uint8), text="the car")
    assert out["pixel_values"].shape == (1, 3, 32, 32) and out["original_sizes"].tolist() == [[3000, 4000]]


@pytest.mark.parametrize("text,item", [("", "expression 0"), (["the car", "   "], "expression 1"),
                                       (["the car", None], "expression 1")])
def test_empty_expression_is_named(processor, text, item):
    with pytest.raises(ValueError, match=item):
        processor(images=Image.new("RGB", (8, 8)), text=text)


def test_count_mismatch_is_named(processor):
    images = [Image.new("RGB", (8, 8))] * 2
    with pytest.raises(ValueError, match="2 images and 3 expressions"):
        processor(images=images, text=["a car", "a bus", "a dog"])
    with pytest.raises(ValueError, match="1 masks for 2 expressions"):
        processor(images=images[0], text=["a car", "a bus"], masks=[np.zeros((8, 8))])


def test_zero_side_image_is_named(processor):
    with pytest.raises(ValueError, match="image 1 has a zero side"):
        processor(images=[Image.new("RGB", (8, 8)), np.zeros((0, 5, 3), dtype=np.uint8)], text=["a", "b"])
    with pytest.raises(ValueError, match="image 0 has a zero side"):
        processor(images=Image.new("RGB", (0, 4)), text="a car")


def test_mask_size_mismatch_is_named(processor):
    images = [Image.new("RGB", (8, 8)), Image.new("RGB", (10, 6))]
    masks = [np.zeros((8, 8)), np.zeros((10, 6))]  # second mask is (h=10, w=6) but its image is (h=6, w=10)
    with pytest.raises(ValueError, match=r"mask 1 has size \(10, 6\).*\(6, 10\)"):
        processor(images=images, text=["a car", "a bus"], masks=masks)


def test_long_expression_is_truncated_with_a_warning(processor, caplog):
    long_text = " ".join(["the red car on the left"] * 6)
    with caplog.at_level(logging.WARNING):
        out = processor(text=[long_text, "the car"])
    assert out["input_ids"].shape == (2, 17) and out["attention_mask"][0].all()
    assert "expression 0" in caplog.text and "truncated" in caplog.text


def test_processor_save_load(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, UniRESProcessor) and isinstance(loaded.image_processor, UniRESImageProcessor)
    assert loaded.text_max_length == 17 and loaded.image_processor.size == {"height": 32, "width": 32}
    image = Image.new("RGB", (20, 30), (10, 200, 30))
    expected, actual = processor(images=image, text=["the car"]), loaded(images=image, text=["the car"])
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def test_build_clip_tokenizer_is_clip_compatible(tmp_path):
    tokenizer = build_clip_tokenizer(TINY_SENTENCES, vocab_size=600, model_max_length=17)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>" and tokenizer.bos_token == "<|startoftext|>"
    assert tokenizer("The  RED car")["input_ids"] == tokenizer("the red car")["input_ids"]  # normalised
    unseen = tokenizer("zebra quokka ümlaut!")["input_ids"]
    assert tokenizer.unk_token_id not in unseen[1:-1]  # every byte is in the vocabulary
    assert tokenizer.decode(tokenizer("the left wheel")["input_ids"], skip_special_tokens=True) == "the left wheel"
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded("left wheel of the bus")["input_ids"] == tokenizer("left wheel of the bus")["input_ids"]
    assert loaded.model_max_length == 17
    with pytest.raises(ValueError, match="at least one sentence"):
        build_clip_tokenizer([])


def test_a_list_of_expressions_per_image(processor):
    images = [Image.new("RGB", (40, 20)), Image.new("RGB", (16, 16)), Image.new("RGB", (8, 12))]
    out = processor(images=images, text=[["the dog", "its ear"], [], "the car"])
    assert out["pixel_values"].shape == (3, 3, 32, 32) and out["input_ids"].shape == (3, 17)
    assert out["image_indices"].dtype == torch.long and out["image_indices"].tolist() == [0, 0, 2]
    assert out["original_sizes"].tolist() == [[20, 40], [16, 16], [12, 8]]
    # The same tokens and pixels as the flat calls, and the old forms give their image_indices too.
    flat = processor(text=["the dog", "its ear", "the car"])
    assert torch.equal(out["input_ids"], flat["input_ids"]) and torch.equal(out["attention_mask"], flat["attention_mask"])
    assert torch.equal(out["pixel_values"], processor.image_processor(images)["pixel_values"])
    assert processor(images=images[0], text=["a", "b"])["image_indices"].tolist() == [0, 0]
    assert processor(images=images[:2], text=["a", "b"])["image_indices"].tolist() == [0, 1]
    assert "image_indices" not in processor(text=["a", "b"]) and "image_indices" not in processor(images=images)
    assert processor(text=[["a"], ["b", "c"]])["image_indices"].tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="2 images and 3 lists of expressions"):
        processor(images=images[:2], text=[["a"], ["b"], ["c"]])
    with pytest.raises(ValueError, match="image 1, expression 0 is empty"):
        processor(images=images[:2], text=[["a"], [" "]])
    with pytest.raises(ValueError, match="text entry 1 is a int"):
        processor(images=images[:2], text=[["a"], 3])
    with pytest.raises(ValueError, match="no expression"):
        processor(images=images[:2], text=[[], []])


def test_masks_per_image_become_the_labels_of_the_training_batch(processor):
    images = [Image.new("RGB", (40, 20)), Image.new("RGB", (16, 16))]
    masks = [[np.ones((20, 40), bool), np.zeros((20, 40), bool)], [np.ones((16, 16), bool)]]
    batch = processor(images=images, text=[["the car", "the bus"], ["the dog"]], masks=masks)
    assert batch["pixel_values"].shape == (2, 3, 32, 32) and batch["input_ids"].shape == (3, 17)
    assert batch["labels"].shape == (3, 32, 32) and batch["labels"][1].eq(0).all() and batch["labels"][2].eq(1).all()
    assert batch["labels"][0].eq(1).all() and batch["image_indices"].tolist() == [0, 0, 1]
    # A flat list of masks, one per expression, is read alike.
    flat = processor(images=images, text=[["the car", "the bus"], ["the dog"]], masks=masks[0] + masks[1])
    assert torch.equal(flat["labels"], batch["labels"])
    with pytest.raises(ValueError, match=r"mask 2 has size \(20, 40\).*image 1"):
        processor(images=images, text=[["a", "b"], ["c"]], masks=[masks[0], [masks[0][0]]])
    with pytest.raises(ValueError, match="image 1 has 1 expressions but 2 masks"):
        processor(images=images, text=[["a", "b"], ["c"]], masks=[masks[0], masks[0]])


def _pil_nearest_labels(masks, height, width):
    """The per-mask PIL path preprocess_masks replaced: 0/255 image, resize(NEAREST), > 127."""
    out = []
    for mask in masks:
        image = Image.fromarray(mask.astype(np.uint8) * 255)
        if image.size != (width, height):
            image = image.resize((width, height), resample=Image.NEAREST)
        out.append(np.asarray(image) > 127)
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("size", [32, 96, {"height": 17, "width": 31}])
def test_batched_mask_resize_gives_the_per_mask_pil_labels(size):
    # Odd sizes, mixed in one batch, and 480x640 -> 96, where torch's "nearest-exact" picks other pixels than PIL.
    image_processor = UniRESImageProcessor(size=size)
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (480, 640), (33, 61), (7, 5), (1, 9), (250, 333), (96, 96), (480, 640)]
    masks = [rng.random(shape) > 0.5 for shape in shapes]
    height, width = image_processor.size["height"], image_processor.size["width"]
    labels = image_processor.preprocess_masks(masks)
    assert isinstance(labels, torch.Tensor) and labels.dtype == torch.float32
    np.testing.assert_array_equal(labels.numpy(), _pil_nearest_labels(masks, height, width))
    # uint8 0/255, PIL and torch inputs are read as before
    mixed = [masks[0].astype(np.uint8) * 255, Image.fromarray(masks[1]), torch.from_numpy(masks[2])]
    np.testing.assert_array_equal(
        image_processor.preprocess_masks(mixed, return_tensors=None), _pil_nearest_labels(masks[:3], height, width)
    )
    with pytest.raises(ValueError, match="masks is empty"):
        image_processor.preprocess_masks([])


def test_one_call_tokenization_equals_two_calls_and_names_truncated(processor, caplog):
    # The fast path (one call with overflow rows) against the plain reference: same ids, same mask, and a warning
    # with the full token count for exactly the expressions longer than text_max_length.
    tokenizer, max_length = processor.tokenizer, processor.text_max_length
    assert tokenizer.is_fast
    texts = ["the car", " ".join(["the red car on the left"] * 6), "a dog", " ".join(TINY_SENTENCES[:3]) * 2,
             "the red car on the left of the big tree"]
    reference = tokenizer(texts, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    full = tokenizer(texts, truncation=False, verbose=False)["input_ids"]
    too_long = [index for index, ids in enumerate(full) if len(ids) > max_length]
    assert too_long and len(too_long) < len(texts)
    with caplog.at_level(logging.WARNING):
        out = processor.tokenize(texts)
    assert torch.equal(out["input_ids"], reference["input_ids"])
    assert torch.equal(out["attention_mask"], reference["attention_mask"])
    warned = [record.getMessage() for record in caplog.records if "truncated" in record.getMessage()]
    assert warned == [f"expression {i} ({texts[i]!r}) has {len(full[i])} tokens and is truncated to {max_length}"
                      for i in too_long]
    assert processor.tokenize(texts, return_tensors=None)["input_ids"] == reference["input_ids"].tolist()
