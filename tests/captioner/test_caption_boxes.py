"""The data engine's contract: ``caption_boxes(image, boxes, granularities) -> list[BoxCaption]``, one image encoding for many boxes."""
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from captioner import BoxCaption, DenseCaptioner, load_base_model


class _ForceTokenAfter(LogitsProcessor):
    """Force ``token`` from the ``step``-th generated token on."""

    def __init__(self, step, token):
        self.step, self.token, self.calls = step, token, 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        if self.calls > self.step:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token] = 0.0
        return scores


@pytest.fixture(scope="module")
def tiny(base_dir):
    return load_base_model(base_dir)


def _count_calls(module):
    calls = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


# Boxes whose coordinates have 1 to 4 digits, so that the box suffixes differ in length (left padding in the middle).
BOXES = [[0, 0, 20, 16], [4, 2, 20, 16], [10, 10, 8, 8], [1, 1, 47, 39], [30, 20, 0.2, 0.2], [0, 0, 48, 40]]


def test_caption_boxes_returns_one_box_caption_per_box(tiny, rows):
    model, processor = tiny
    captioner = DenseCaptioner(model, processor, max_new_tokens=5)
    granularities = ["object", "part", "image", "object", "part", "image"]
    results = captioner.caption_boxes(rows[0]["image"], BOXES, granularities)
    assert len(results) == len(BOXES) and all(isinstance(r, BoxCaption) for r in results)
    assert [r.text for r in results] == captioner.caption(Image.open(rows[0]["image"]), BOXES, granularities)
    with pytest.raises(ValueError, match="2 granularities for 6 boxes"):
        captioner.caption_boxes(rows[0]["image"], BOXES, ["object", "part"])


@pytest.mark.parametrize("max_batch_size", [64, 4])
def test_the_vision_tower_runs_once_per_image_and_captions_equal_the_unshared_path(tiny, rows, max_batch_size):
    model, processor = tiny
    calls, handle = _count_calls(model.model.visual)
    try:
        shared = DenseCaptioner(model, processor, max_new_tokens=6, max_batch_size=max_batch_size).caption_boxes(rows[1]["image"], BOXES, "object")
        shared_calls = len(calls)
        calls.clear()
        unshared = DenseCaptioner(model, processor, max_new_tokens=6, max_batch_size=1, share_image_prefix=False).caption_boxes(rows[1]["image"], BOXES, "object")
        unshared_calls = len(calls)
    finally:
        handle.remove()
    assert shared_calls == 1  # 6 boxes, however many generation batches
    assert unshared_calls == 6
    assert shared == unshared
    assert len({r.text for r in shared}) > 1  # captions differ between boxes, so an order mix-up would show


def test_requests_over_several_images_encode_each_image_once(tiny, rows):
    from captioner import BoxRequest

    model, processor = tiny
    images = [Image.open(r["image"]).convert("RGB") for r in rows[:3]]
    requests = [BoxRequest(images[i % 3], BOXES[i % len(BOXES)], "part", item=i) for i in range(9)]
    calls, handle = _count_calls(model.model.visual)
    try:
        shared = DenseCaptioner(model, processor, max_new_tokens=5).caption_requests(requests)
    finally:
        handle.remove()
    assert len(calls) == 3
    assert shared == DenseCaptioner(model, processor, max_new_tokens=5, share_image_prefix=False).caption_requests(requests)


def test_captions_cut_at_max_new_tokens_are_marked_truncated(tiny, rows):
    model, processor = tiny
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    box = [[0, 0, 20, 16]]
    for share in (True, False):
        # min_new_tokens == max_new_tokens suppresses the end-of-turn token: the caption is cut off.
        cut = DenseCaptioner(model, processor, max_new_tokens=4, share_image_prefix=share,
                             generation_kwargs={"min_new_tokens": 4}).caption_boxes(rows[0]["image"], box)
        assert cut[0].truncated
        # An end-of-turn after two tokens ends the caption before the limit: complete.
        forced = LogitsProcessorList([_ForceTokenAfter(2, eos)])
        done = DenseCaptioner(model, processor, max_new_tokens=4, share_image_prefix=share,
                              generation_kwargs={"logits_processor": forced}).caption_boxes(rows[0]["image"], box)
        assert not done[0].truncated
