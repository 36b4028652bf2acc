"""The data engine's contract: ``caption_boxes(image, boxes, granularities) -> list[BoxCaption]``, one image encoding for many boxes."""
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from captioner import BoxCaption, DenseCaptioner, load_base_model
from run_support.rejects import RejectLog


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
    """Images through the vision tower: one entry per image of each call (its ``grid_thw`` rows)."""
    calls = []

    def hook(_, args, kwargs, output):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        calls.extend([1] * (len(grid) if grid is not None else 1))

    handle = module.register_forward_hook(hook, with_kwargs=True)
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
    assert len(calls) == 3  # three images, nine boxes
    assert shared == DenseCaptioner(model, processor, max_new_tokens=5, share_image_prefix=False).caption_requests(requests)
    # packed or one image at a time, the captions are the same
    assert shared == DenseCaptioner(model, processor, max_new_tokens=5, max_batch_size=3).caption_requests(requests)
    assert shared == DenseCaptioner(model, processor, max_new_tokens=5, max_batch_size=2).caption_requests(requests)
    six = DenseCaptioner(model, processor, max_new_tokens=5, max_batch_size=6)
    groups = {}
    for index, request in enumerate(requests):
        groups.setdefault(id(request.image), []).append(six._prepare(request, index, {}))
    assert [len(pack) for pack in six._packs(groups)] == [2, 1]  # whole images per generation batch, at most six boxes


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


# -- bounded images ----------------------------------------------------------------------------

from captioner.box_prompts import QWEN2_5_VL_BOX_FORMAT  # noqa: E402
from captioner.encoding import DEFAULT_MAX_IMAGE_TOKENS, box_instruction, image_processing_kwargs, resized_image_size  # noqa: E402
from tiny_models.captioner import build_tiny_processor  # noqa: E402


def _image_tokens(processor, image, image_kwargs):
    encoded = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[image], return_tensors="pt", **image_kwargs)
    return int((encoded["input_ids"] == processor.image_token_id).sum())


def test_image_tokens_are_capped_by_default_and_configurable(tiny):
    model, _ = tiny
    processor = build_tiny_processor()
    processor.image_processor.size = {"shortest_edge": 1024, "longest_edge": 16384 * 1024}  # Qwen3-VL's own 16,384-token limit
    big = Image.new("RGB", (2048, 2048))
    assert _image_tokens(processor, big, {}) == 4096  # what the processor alone would feed the model
    default = DenseCaptioner(model, processor)
    assert _image_tokens(processor, big, default.image_kwargs) <= DEFAULT_MAX_IMAGE_TOKENS == 1280
    small = DenseCaptioner(model, processor, max_image_tokens=64)
    assert 32 <= _image_tokens(processor, big, small.image_kwargs) <= 64
    assert small._count_image_tokens(big, "") == _image_tokens(processor, big, small.image_kwargs)  # the budget counts what runs
    assert DenseCaptioner(model, processor, max_image_tokens=None).image_kwargs == {}
    # never more than the processor's own limit
    assert image_processing_kwargs(build_tiny_processor(), 1280)["size"]["longest_edge"] == 4 * 32 * 32
    with pytest.raises(ValueError, match="max_image_tokens must be positive"):
        image_processing_kwargs(processor, 0)


def test_a_large_image_is_captioned_within_the_cap(tiny):
    model, processor = tiny
    calls = []
    handle = model.model.visual.register_forward_hook(lambda module, args, kwargs=None: calls.append(args[0].shape[0]))
    try:
        DenseCaptioner(model, processor, max_new_tokens=2, max_image_tokens=2).caption_boxes(Image.new("RGB", (3000, 2000)), [[10, 10, 500, 500]])
    finally:
        handle.remove()
    assert calls and calls[0] <= 2 * 4  # patches entering the vision tower: 4 per image token (2x2 merge)


def test_qwen2_5_vl_boxes_use_the_size_the_processor_resizes_to():
    processor = build_tiny_processor()
    kwargs = image_processing_kwargs(processor, 4)
    image = Image.new("RGB", (300, 100))
    width, height = resized_image_size(processor, image.size, kwargs)
    grid = processor.image_processor(images=[image], return_tensors="pt", **kwargs)["image_grid_thw"][0]
    assert (height, width) == (int(grid[1]) * 16, int(grid[2]) * 16)
    instruction = box_instruction(processor, image.size, [150, 50, 150, 50], "object", QWEN2_5_VL_BOX_FORMAT, image_kwargs=kwargs)
    assert f'"bbox_2d": [{width // 2}, {height // 2}, {width}, {height}]' in instruction


# -- caption_dataset ---------------------------------------------------------------------------

def test_caption_dataset_decodes_and_encodes_each_image_once(tiny, rows, monkeypatch):
    import captioner.generate as generate

    model, processor = tiny
    decoded = []
    original = generate.load_image
    monkeypatch.setattr(generate, "load_image", lambda image, item=None: decoded.append(image) or original(image, item))
    data = [dict(rows[0], bbox=box) for box in BOXES] + [dict(rows[1], bbox=box) for box in BOXES[:2]]
    calls, handle = _count_calls(model.model.visual)
    try:
        rejects = RejectLog(stage="caption")
        results = list(DenseCaptioner(model, processor, max_new_tokens=3).caption_dataset(data, rejects))
    finally:
        handle.remove()
    assert len(decoded) == 2 and len(calls) == 2  # two images, eight rows
    assert [r["index"] for r in results] == list(range(8)) and rejects.kept == 8
    assert all(isinstance(r["truncated"], bool) for r in results)


@pytest.mark.parametrize("family, box_text", [("qwen2_vl", "(0,0),(357,400)"), ("qwen2_5_vl", '{"bbox_2d": [0, 0, 20, 11]}')])
def test_other_qwen_families_get_their_own_box_syntax_and_share_the_prefix_too(family, box_text):
    from captioner.generate import BoxRequest
    from tiny_models.captioner import build_tiny_qwen2_family

    model, processor = build_tiny_qwen2_family(family)
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (40, 56, 3), dtype=np.uint8))
    captioner = DenseCaptioner(model, processor, max_new_tokens=5)
    assert box_text in captioner._prepare(BoxRequest(image, BOXES[0]), 0, {}).prompt  # 56x40 resized to 56x28 for Qwen2.5-VL
    calls, handle = _count_calls(model.model.visual)
    try:
        shared = captioner.caption_boxes(image, BOXES, "object")
    finally:
        handle.remove()
    assert len(calls) == 1
    assert shared == DenseCaptioner(model, processor, max_new_tokens=5, share_image_prefix=False, max_batch_size=2).caption_boxes(image, BOXES, "object")


def test_beam_search_falls_back_to_full_prompts(tiny, rows):
    model, processor = tiny
    beams = DenseCaptioner(model, processor, max_new_tokens=4, generation_kwargs={"num_beams": 2})
    assert beams.prefix_text is None
    assert len(beams.caption_boxes(rows[0]["image"], BOXES[:2])) == 2
    assert DenseCaptioner(model, processor).prefix_text == "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"


def test_undecoded_dataset_images_are_decoded_once_per_image(tiny, rows, monkeypatch):
    import datasets

    import captioner.generate as generate

    model, processor = tiny
    data = datasets.Dataset.from_list([{"image": rows[i % 2]["image"], "bbox": box} for i, box in enumerate(BOXES)],
                                      features=datasets.Features({"image": datasets.Image(), "bbox": datasets.Sequence(datasets.Value("float32"))}))
    data = data.cast_column("image", datasets.Image(decode=False))
    decoded = []
    original = generate.load_image
    monkeypatch.setattr(generate, "load_image", lambda image, item=None: decoded.append(1) or original(image, item))
    results = list(DenseCaptioner(model, processor, max_new_tokens=2).caption_dataset(data))
    assert len(results) == len(BOXES) and len(decoded) == 2
