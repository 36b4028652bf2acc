"""COCO RLE helpers: round trips, geometry, polygons, PNG masks and bad input."""

import io

import numpy as np
import pytest
from PIL import Image

from dataset_scripts.masks import decode_mask, encode_mask, mask_area, mask_bbox, mask_from_png, mask_from_polygons


def _random_mask(seed, shape=(37, 53)):
    rng = np.random.default_rng(seed)
    return rng.random(shape) > 0.6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_encode_decode_round_trip_and_str_counts(seed):
    mask = _random_mask(seed)
    rle = encode_mask(mask)
    assert rle["size"] == [37, 53]
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_mask(rle), mask)
    assert mask_area(rle) == int(mask.sum())


def test_bbox_of_a_rectangle_and_of_an_empty_mask():
    mask = np.zeros((20, 30), bool)
    mask[4:9, 10:22] = True
    assert mask_bbox(encode_mask(mask)) == [10.0, 4.0, 12.0, 5.0]
    assert mask_bbox(encode_mask(np.zeros((5, 5), bool))) == [0.0, 0.0, 0.0, 0.0]


def test_polygon_is_rasterised_and_clipped_to_the_image():
    rle = mask_from_polygons([[2, 2, 8, 2, 8, 6, 2, 6]], height=10, width=10)
    mask = decode_mask(rle)
    assert mask.shape == (10, 10)
    assert mask[3:6, 3:8].all() and not mask[8:, :].any()
    # A square that pokes out of the image is clipped, not wrapped around.
    clipped = decode_mask(mask_from_polygons([[-5, -5, 4, -5, 4, 4, -5, 4]], height=10, width=10))
    assert clipped[:3, :3].all() and not clipped[6:, 6:].any()
    assert mask_area(mask_from_polygons([[20, 20, 30, 20, 30, 30]], 10, 10)) == 0


def test_polygon_with_too_few_points_names_the_polygon():
    with pytest.raises(ValueError, match="polygon 1"):
        mask_from_polygons([[0, 0, 5, 0, 5, 5], [1, 1, 2, 2]], 10, 10)


def test_png_masks_in_several_modes(tmp_path):
    mask = _random_mask(3, (12, 17))
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "l.png")
    np.testing.assert_array_equal(mask_from_png(str(tmp_path / "l.png")), mask)
    palette = Image.fromarray(mask.astype(np.uint8), mode="L").convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    np.testing.assert_array_equal(mask_from_png(buf.getvalue()), mask)


def test_unreadable_png_names_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="broken.png"):
        mask_from_png(str(bad))


def test_uncompressed_rle_and_bad_rle_input():
    mask = np.zeros((4, 3), bool)
    mask[1:3, 1] = True
    # column-major run lengths: 5 zeros, 2 ones, 5 zeros
    assert decode_mask({"size": [4, 3], "counts": [5, 2, 5]}).tolist() == mask.tolist()
    with pytest.raises(ValueError, match="2-D"):
        encode_mask(np.zeros((2, 2, 2), bool))
    with pytest.raises(ValueError, match="COCO RLE"):
        decode_mask({"counts": "abc"})


def test_compressed_rle_is_validated_against_its_size():
    rng = np.random.default_rng(0)
    for _ in range(50):  # the counts parser agrees with pycocotools on random masks
        mask = rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) < rng.random()
        assert np.array_equal(decode_mask(encode_mask(mask)), mask)
    counts = encode_mask(np.ones((96, 96), bool))["counts"]
    with pytest.raises(ValueError, match=r"label 7 is not a valid COCO RLE: its runs add up to 9216 .* 19200"):
        decode_mask({"size": [120, 160], "counts": counts}, "label 7")
    with pytest.raises(ValueError, match=r"not a valid COCO RLE: its counts string ends in the middle of a run"):
        decode_mask({"size": [2, 2], "counts": "0`"})  # a continuation bit with nothing after it
    with pytest.raises(ValueError, match=r"not a COCO RLE character"):
        decode_mask({"size": [2, 2], "counts": "1 3"})
    with pytest.raises(ValueError, match=r"empty RLE size"):
        decode_mask({"size": [0, 4], "counts": ""})


def test_encode_mask_accepts_any_rle_form_and_refuses_probabilities():
    mask = np.zeros((3, 4), bool)
    mask[1:, 2:] = True
    compressed = encode_mask(mask)
    assert encode_mask(compressed) == compressed
    as_list = {"size": [3, 4], "counts": [7, 2, 1, 2]}  # column-major runs of `mask`
    assert encode_mask(as_list) == compressed
    with pytest.raises(ValueError, match="prediction 2 has dtype float32"):
        encode_mask(mask.astype(np.float32) * 0.7, "prediction 2")
