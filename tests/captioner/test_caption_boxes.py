"""The data engine's contract: ``caption_boxes(image, boxes, granularities) -> list[BoxCaption]``."""
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from captioner import BoxCaption, DenseCaptioner, load_base_model


class _ForceTokenAt(LogitsProcessor):
    """Force ``token`` once ``step`` new tokens have been generated."""

    def __init__(self, prompt_length, step, token):
        self.prompt_length, self.step, self.token = prompt_length, step, token

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_length >= self.step:
            scores = torch.full_like(scores, -float("inf"))
            scores[:, self.token] = 0.0
        return scores


@pytest.fixture(scope="module")
def tiny(base_dir):
    return load_base_model(base_dir)


def test_caption_boxes_returns_one_box_caption_per_box(tiny, rows):
    model, processor = tiny
    captioner = DenseCaptioner(model, processor, max_new_tokens=5)
    boxes = [[0, 0, 20, 16], [4, 2, 20, 16], [10, 10, 8, 8]]
    results = captioner.caption_boxes(rows[0]["image"], boxes, ["object", "part", "image"])
    assert len(results) == 3 and all(isinstance(r, BoxCaption) for r in results)
    assert [r.text for r in results] == captioner.caption(Image.open(rows[0]["image"]), boxes, ["object", "part", "image"])
    assert [r.text for r in captioner.caption_boxes(rows[0]["image"], boxes, "part")] == captioner.caption(rows[0]["image"], boxes, "part")
    with pytest.raises(ValueError, match="2 granularities for 3 boxes"):
        captioner.caption_boxes(rows[0]["image"], boxes, ["object", "part"])


def test_captions_cut_at_max_new_tokens_are_marked_truncated(tiny, rows):
    model, processor = tiny
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    box = [[0, 0, 20, 16]]
    # min_new_tokens == max_new_tokens suppresses the end-of-turn token: the caption is cut off.
    cut = DenseCaptioner(model, processor, max_new_tokens=4, generation_kwargs={"min_new_tokens": 4}).caption_boxes(rows[0]["image"], box)
    assert cut[0].truncated
    # An end-of-turn after two tokens ends the caption before the limit: complete.
    prompt_length = _prompt_length(model, processor, rows[0]["image"], box)
    forced = LogitsProcessorList([_ForceTokenAt(prompt_length, 2, eos)])
    done = DenseCaptioner(model, processor, max_new_tokens=4, generation_kwargs={"logits_processor": forced}).caption_boxes(rows[0]["image"], box)
    assert not done[0].truncated


def _prompt_length(model, processor, image, boxes):
    captioner = DenseCaptioner(model, processor, max_new_tokens=1)
    from captioner.generate import BoxRequest

    prepared = captioner._prepare(BoxRequest(image, boxes[0]), 0)
    return captioner._prompt_tokens(prepared)
