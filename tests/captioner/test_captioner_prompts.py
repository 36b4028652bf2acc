"""Box prompts: [0, 999] normalisation, clipping, refusal of bad boxes; the reject log."""
import json
import math

import pytest

from captioner.box_prompts import (
    PROMPT_TEMPLATES,
    build_messages,
    build_prompt,
    clip_box,
    denormalize_box,
    normalize_box,
)


@pytest.mark.parametrize("size", [(640, 480), (37, 1013), (1, 1), (4000, 3)])
def test_round_trip_within_a_thousandth_of_the_side(size):
    width, height = size
    for box in ([0, 0, width, height], [width * 0.1, height * 0.37, width * 0.5, height * 0.21], [width / 3, height / 7, width / 5, height / 2]):
        normalized = normalize_box(box, size)
        assert all(isinstance(v, int) and 0 <= v <= 999 for v in normalized)
        x, y, w, h = denormalize_box(normalized, size)
        assert abs(x - box[0]) <= width / 1000 and abs(x + w - (box[0] + box[2])) <= width / 1000
        assert abs(y - box[1]) <= height / 1000 and abs(y + h - (box[1] + box[3])) <= height / 1000


def test_whole_image_is_0_0_999_999():
    assert normalize_box([0, 0, 333, 77], (333, 77)) == (0, 0, 999, 999)


def test_boxes_outside_the_image_are_clipped():
    assert clip_box([-10, -5, 50, 30], (40, 20)) == (0.0, 0.0, 40.0, 20.0)
    assert normalize_box([30, 10, 100, 100], (40, 20)) == (749, 500, 999, 999)


@pytest.mark.parametrize(
    "box, message",
    [([5, 5, 0, 10], "zero or negative size"), ([5, 5, 10, -1], "zero or negative size"),
     ([math.nan, 0, 5, 5], "NaN"), ([0, 0, 5, math.inf], "NaN"), ([50, 50, 5, 5], "outside"), ([1, 2, 3], "4 numbers")],
)
def test_bad_boxes_are_refused_naming_the_item(box, message):
    with pytest.raises(ValueError, match=message) as error:
        normalize_box(box, (40, 20), item="img7/box3")
    assert "img7/box3" in str(error.value)


def test_one_prompt_per_granularity_with_the_box_as_text():
    prompts = {g: build_prompt(g, (1, 22, 333, 999)) for g in PROMPT_TEMPLATES}
    assert len(set(prompts.values())) == 3
    assert all("(1,22),(333,999)" in p for p in prompts.values())
    with pytest.raises(ValueError, match="granularity 'scene'"):
        build_prompt("scene", (0, 0, 999, 999))
    messages = build_messages(prompts["part"], "ear of dog")
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"][0] == {"type": "image"}


# -- each base family's own box syntax --------------------------------------------------------

from types import SimpleNamespace  # noqa: E402

from captioner.box_prompts import (  # noqa: E402
    PAPER_BOX_FORMAT,
    QWEN2_5_VL_BOX_FORMAT,
    QWEN2_VL_BOX_FORMAT,
    QWEN3_VL_BOX_FORMAT,
    box_coordinates,
    box_format_for,
    format_box,
)


def test_the_box_format_follows_the_model_family():
    assert box_format_for(SimpleNamespace(model_type="qwen3_vl")) is QWEN3_VL_BOX_FORMAT
    assert box_format_for(SimpleNamespace(config=SimpleNamespace(model_type="qwen3_vl_moe"))) is QWEN3_VL_BOX_FORMAT
    assert box_format_for(SimpleNamespace(model_type="qwen2_5_vl")) is QWEN2_5_VL_BOX_FORMAT
    assert box_format_for(SimpleNamespace(model_type="qwen2_vl")) is QWEN2_VL_BOX_FORMAT
    assert box_format_for(SimpleNamespace(model_type="llava")) is PAPER_BOX_FORMAT


def test_qwen3_vl_boxes_are_bbox_2d_json_on_a_0_1000_scale():
    coordinates = box_coordinates([50, 25, 100, 50], (200, 100), QWEN3_VL_BOX_FORMAT)
    assert coordinates == (250, 250, 750, 750)
    assert format_box(coordinates, QWEN3_VL_BOX_FORMAT) == '{"bbox_2d": [250, 250, 750, 750]}'
    assert json.loads(format_box(coordinates, QWEN3_VL_BOX_FORMAT)) == {"bbox_2d": [250, 250, 750, 750]}
    assert build_prompt("image", box_coordinates([0, 0, 200, 100], (200, 100), QWEN3_VL_BOX_FORMAT), box_format=QWEN3_VL_BOX_FORMAT) == \
        'Describe the whole image {"bbox_2d": [0, 0, 1000, 1000]} in one sentence.'


def test_qwen2_vl_boxes_are_pairs_on_a_0_1000_scale():
    coordinates = box_coordinates([50, 25, 100, 50], (200, 100), QWEN2_VL_BOX_FORMAT)
    assert format_box(coordinates, QWEN2_VL_BOX_FORMAT) == "(250,250),(750,750)"


def test_qwen2_5_vl_boxes_are_absolute_pixels_of_the_resized_image():
    # a 200x100 image resized by the processor to 392x196: the box [50, 25, 100, 50] covers 98..294 x 49..147 there
    coordinates = box_coordinates([50, 25, 100, 50], (200, 100), QWEN2_5_VL_BOX_FORMAT, resized_size=(392, 196))
    assert coordinates == (98, 49, 294, 147)
    assert format_box(coordinates, QWEN2_5_VL_BOX_FORMAT) == '{"bbox_2d": [98, 49, 294, 147]}'
    with pytest.raises(ValueError, match="resized image size"):
        box_coordinates([50, 25, 100, 50], (200, 100), QWEN2_5_VL_BOX_FORMAT)


@pytest.mark.parametrize("box_format", [PAPER_BOX_FORMAT, QWEN2_VL_BOX_FORMAT, QWEN3_VL_BOX_FORMAT, QWEN2_5_VL_BOX_FORMAT])
@pytest.mark.parametrize("box", [[1000.2, 500.1, 0.05, 0.05], [0, 0, 0.01, 0.01], [3999.99, 2999.99, 0.01, 0.01], [2000, 10, 0.3, 2500]])
def test_very_small_boxes_never_round_to_zero_size(box_format, box):
    x1, y1, x2, y2 = box_coordinates(box, (4000, 3000), box_format, resized_size=(1024, 768))
    limit = box_format.scale or None
    assert x2 > x1 and y2 > y1
    assert 0 <= x1 and 0 <= y1 and x2 <= (limit or 1024) and y2 <= (limit or 768)
