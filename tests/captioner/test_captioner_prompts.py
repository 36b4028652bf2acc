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
