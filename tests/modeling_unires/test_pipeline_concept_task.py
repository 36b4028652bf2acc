"""The pipeline in transformers' `promptable-concept-segmentation` form (pull request 43612, SAM 3's pipeline).

Inputs: a list of `{"image", "text"}` dicts or one dict; per item a list of results with `score`, `box`
(`{"xmin", "ymin", "xmax", "ymax"}`), `mask` (0/1 `torch.long`) and `label`. Every result, in either form, has `box`:
the mask's extent (max edges exclusive), `None` for an empty mask. The old call `pipe(image, texts)` is unchanged.
"""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Pipeline, pipeline
from transformers.pipelines import PIPELINE_REGISTRY, SUPPORTED_TASKS

import modeling_unires  # noqa: F401  (registers the task)
from modeling_unires.pipeline_unires import (
    CONCEPT_TASK,
    PromptableConceptSegmentationAlias,
    ReferringExpressionSegmentationPipeline,
    alias_concept_task,
    mask_box,
)
from tiny_models.unires import tiny_model_and_processor

TASK = "referring-expression-segmentation"
HAS_CONCEPT_TASK = CONCEPT_TASK in SUPPORTED_TASKS
NO_TASK_REASON = ("the installed transformers has no 'promptable-concept-segmentation' task (transformers pull request "
                  "43612); the stand-in task below checks the same registration")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("unires-concept")
    model, processor = tiny_model_and_processor(seed=2)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    rng = np.random.default_rng(0)
    jpeg, png = folder / "photo.jpg", folder / "drawing.png"
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(jpeg, quality=90)
    Image.fromarray(rng.integers(0, 256, (44, 30, 3), dtype=np.uint8)).save(png)
    return folder, str(jpeg), str(png)


@pytest.fixture(scope="module")
def segmenter(saved):
    return pipeline(TASK, model=str(saved[0]))


def extent(mask) -> dict | None:
    """The box of a mask computed here, from the coordinates of its pixels (not by the pipeline's code)."""
    ys, xs = np.nonzero(np.asarray(mask, dtype=bool))
    if len(xs) == 0:
        return None
    return {"xmin": int(xs.min()), "ymin": int(ys.min()), "xmax": int(xs.max()) + 1, "ymax": int(ys.max()) + 1}


@pytest.fixture
def partial_masks(segmenter, monkeypatch):
    """The model's logits replaced by a block of +8 in a sea of -8 (a different block per expression), so that
    every mask covers part of the image and its box is not the whole image."""
    original_forward = segmenter.model.forward

    def blocks(*args, **kwargs):
        outputs = original_forward(*args, **kwargs)
        logits = torch.full_like(outputs.logits, -8.0)
        height, width = logits.shape[-2:]
        for row in range(logits.shape[0]):
            top, left = (row * 2) % (height // 2), (row * 3) % (width // 2)
            logits[row, top : top + height // 3, left : left + width // 4] = 8.0
        outputs.logits = logits
        return outputs

    monkeypatch.setattr(segmenter.model, "forward", blocks)


def test_a_list_of_image_text_dicts_gives_a_list_of_results_per_item(segmenter, saved):
    _, jpeg, png = saved
    items = [{"image": jpeg, "text": "the red car"}, {"image": Image.open(png), "text": ["the dog", "its ear"]}]
    results = segmenter(items)
    assert isinstance(results, list) and len(results) == 2
    assert [len(item) for item in results] == [1, 2]
    for item, (height, width), texts in zip(results, [(37, 53), (44, 30)], [["the red car"], ["the dog", "its ear"]]):
        assert [result["label"] for result in item] == texts == [result["text"] for result in item]
        for result in item:
            assert sorted(result) == ["box", "label", "mask", "score", "text"]
            # SAM 3's pipeline gives its masks as 0/1 torch.long tensors at the original size.
            assert isinstance(result["mask"], torch.Tensor) and result["mask"].dtype == torch.long
            assert tuple(result["mask"].shape) == (height, width) and set(result["mask"].unique().tolist()) <= {0, 1}
            assert isinstance(result["score"], float) and 0.0 <= result["score"] <= 1.0
    # The same masks and scores as the old call on the same image and expressions.
    old = segmenter([jpeg, png], [["the red car"], ["the dog", "its ear"]], mask_format="numpy")
    for new_item, old_item in zip(results, old):
        for new, previous in zip(new_item, old_item):
            assert np.array_equal(new["mask"].numpy().astype(bool), previous["mask"])
            assert new["score"] == pytest.approx(previous["score"], abs=1e-6) and new["box"] == previous["box"]


def test_one_dict_gives_one_list_of_results(segmenter, saved):
    _, jpeg, _ = saved
    results = segmenter({"image": jpeg, "text": "the red car"}, mask_format="numpy")
    assert isinstance(results, list) and len(results) == 1 and isinstance(results[0], dict)
    assert results[0]["label"] == "the red car" and results[0]["mask"].dtype == np.bool_
    nested = segmenter([{"image": jpeg, "text": "the red car"}], mask_format="numpy")
    assert len(nested) == 1 and np.array_equal(nested[0][0]["mask"], results[0]["mask"])


def test_the_box_is_the_masks_extent_in_both_forms(segmenter, saved, partial_masks):
    _, jpeg, png = saved
    texts = ["the red car", "the window", "the wheel"]
    old = segmenter(jpeg, texts, mask_format="numpy")
    concept = segmenter([{"image": png, "text": texts}])[0]
    for result, (height, width) in [(r, (37, 53)) for r in old] + [(r, (44, 30)) for r in concept]:
        mask = np.asarray(result["mask"]).astype(bool)
        assert 0 < mask.sum() < height * width  # a part of the image: the box is a real test
        box = result["box"]
        assert box == extent(mask)
        assert set(box) == {"xmin", "ymin", "xmax", "ymax"} and all(type(v) is int for v in box.values())
        assert box["xmax"] - box["xmin"] < width or box["ymax"] - box["ymin"] < height
        # Everything outside the box is background, and each edge row/column of the box holds the mask.
        inside = np.zeros_like(mask)
        inside[box["ymin"] : box["ymax"], box["xmin"] : box["xmax"]] = True
        assert not (mask & ~inside).any()
        assert mask[box["ymin"]].any() and mask[box["ymax"] - 1].any()
        assert mask[:, box["xmin"]].any() and mask[:, box["xmax"] - 1].any()
    # The boxes differ per expression (the blocks do): the box follows each mask, not the image.
    assert len({tuple(r["box"].values()) for r in old}) == len(texts)


def test_an_empty_mask_has_no_box(segmenter, saved):
    _, jpeg, _ = saved
    # No probability exceeds 1.0: every mask is empty.
    old = segmenter(jpeg, ["the red car", "the dog"], threshold=1.0, mask_format="numpy")
    concept = segmenter([{"image": jpeg, "text": "the red car"}], mask_threshold=1.0)[0]
    for result in old + concept:
        assert not np.asarray(result["mask"]).any() and result["box"] is None
    assert mask_box(np.zeros((4, 5), dtype=bool)) is None
    one_pixel = np.zeros((4, 5), dtype=bool)
    one_pixel[2, 3] = True
    assert mask_box(one_pixel) == {"xmin": 3, "ymin": 2, "xmax": 4, "ymax": 3} == extent(one_pixel)


def test_the_old_call_is_unchanged_but_for_the_box(segmenter, saved):
    _, jpeg, png = saved
    one = segmenter(jpeg, "the red car")
    assert isinstance(one, dict) and sorted(one) == ["box", "mask", "score", "text"]
    assert isinstance(one["mask"], Image.Image) and one["mask"].mode == "L" and one["mask"].size == (53, 37)
    many = segmenter(jpeg, ["the red car", "the dog"], mask_format="numpy", return_rle=True)
    assert [sorted(r) for r in many] == [["box", "mask", "rle", "score", "text"]] * 2
    batched = segmenter([jpeg, png], ["the red car", ["the dog"]], mask_format="numpy")
    assert isinstance(batched[0], dict) and isinstance(batched[1], list)
    # In the old form `threshold` still binarises the masks (it is not a score filter): a lower one grows them.
    low = segmenter(jpeg, ["the red car"], threshold=0.05, mask_format="numpy")[0]["mask"]
    high = segmenter(jpeg, ["the red car"], threshold=0.95, mask_format="numpy")[0]["mask"]
    assert low.sum() > high.sum() and not (high & ~low).any()
    same = segmenter(jpeg, ["the red car"], mask_threshold=0.95, mask_format="numpy")[0]["mask"]
    assert np.array_equal(same, high)  # mask_threshold is its other name


def test_concept_form_parameters_are_the_tasks(segmenter, saved):
    _, jpeg, _ = saved
    texts = ["the red car", "the dog", "the window", "its ear"]
    every = segmenter({"image": jpeg, "text": texts})
    scores = [result["score"] for result in every]
    # `threshold` is the lowest score kept (score > threshold), as in SAM 3's pipeline.
    cut = sorted(scores)[1]
    kept = segmenter({"image": jpeg, "text": texts}, threshold=cut)
    assert [r["text"] for r in kept] == [t for t, s in zip(texts, scores) if s > cut]
    assert segmenter({"image": jpeg, "text": texts}, threshold=1.0) == []
    # `top_k` keeps the highest-scoring results, in their expressions' order.
    top = segmenter({"image": jpeg, "text": texts}, top_k=2)
    best_two = sorted(range(4), key=lambda row: -scores[row])[:2]
    assert [r["text"] for r in top] == [texts[row] for row in sorted(best_two)]
    # `mask_threshold` binarises the masks.
    low = segmenter({"image": jpeg, "text": "the red car"}, mask_threshold=0.05)[0]["mask"]
    high = segmenter({"image": jpeg, "text": "the red car"}, mask_threshold=0.95)[0]["mask"]
    assert int(low.sum()) > int(high.sum())


@pytest.mark.parametrize("items, message", [
    ([{"image": "a.jpg", "text": "the dog"}, {"image": "b.jpg"}], r"item 1 has no 'text': every item needs 'image'"),
    ([{"text": "the dog"}], r"item 0 has no 'image'"),
    ([{"image": "a.jpg", "text": 7}], r"item 0: 'text' must be a string or a list of strings, got int"),
    ([{"image": "a.jpg", "text": "x"}, {"image": "a.jpg", "text": {"the": "dog"}}],
     r"item 1: 'text' must be a string or a list of strings, got dict"),
    ([{"image": "a.jpg", "text": ["the dog", " "]}], r"item 0: 'text': expression 1 is empty"),
    ([{"image": "a.jpg", "text": ["the dog", 3]}], r"item 0: 'text': expression 1 .*str"),
    ([{"image": "a.jpg", "text": "x"}, "b.jpg"], r"item 1 is a str: .* every item is a dict"),
    ([{"image": "a.jpg", "text": "x", "input_boxes": [[[1, 2, 3, 4]]]}], r"item 0: 'input_boxes' is not supported"),
    ([{"image": "a.jpg", "txt": "x", "text": "y"}], r"item 0: unknown key 'txt'"),
])
def test_malformed_items_are_refused_naming_the_item_and_the_key(segmenter, items, message):
    with pytest.raises(ValueError, match=message):
        segmenter(items)


def test_other_refusals_of_the_concept_form(segmenter, saved):
    folder, jpeg, _ = saved
    with pytest.raises(ValueError, match=r"items and a `text` argument"):
        segmenter([{"image": jpeg, "text": "x"}], ["y"])
    with pytest.raises(ValueError, match=r"top_k is an option of the promptable-concept-segmentation form"):
        segmenter(jpeg, ["the dog"], top_k=1)
    with pytest.raises(ValueError, match=r"threshold=0.2 and mask_threshold=0.3: here both name the mask threshold"):
        segmenter(jpeg, ["the dog"], threshold=0.2, mask_threshold=0.3)
    for top_k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match=r"top_k=.* is invalid"):
            segmenter({"image": jpeg, "text": "x"}, top_k=top_k)
    with pytest.raises(ValueError, match=r"mask_threshold=2 is invalid: expected a probability"):
        segmenter({"image": jpeg, "text": "x"}, mask_threshold=2)
    # An image is named by its item's index, whatever the batch it runs in.
    missing = str(folder / "missing.png")
    with pytest.raises(ValueError, match=r"image 2: No image file at '.*missing.png'"):
        segmenter([{"image": jpeg, "text": "x"}, {"image": jpeg, "text": "y"}, {"image": missing, "text": "z"}],
                  batch_size=1)


# ------------------------------------------------------------------------------- the task name, where it exists
class StandInConceptPipeline(Pipeline):
    """What transformers' own `promptable-concept-segmentation` pipeline stands for in these tests."""

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, **kwargs):
        return {}, {}, {}

    def preprocess(self, inputs):
        return inputs

    def _forward(self, inputs):
        return inputs

    def postprocess(self, outputs):
        return outputs


@pytest.fixture
def stand_in_task(monkeypatch):
    """transformers as if it had the task: its own pipeline class (named as a "module.Class" string, as transformers
    names its built-in ones) and its own model auto class, both stand-ins; undone after the test."""
    from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    class AutoModelForStandInConcept(_BaseAutoModelClass):
        _model_mapping = _LazyAutoMapping(CONFIG_MAPPING_NAMES, OrderedDict())

    entry = {"impl": f"{__name__}.StandInConceptPipeline", "pt": (AutoModelForStandInConcept,), "type": "multimodal"}
    monkeypatch.setitem(PIPELINE_REGISTRY.supported_tasks, CONCEPT_TASK, entry)
    monkeypatch.setattr(PromptableConceptSegmentationAlias, "task_pipeline_class", None)
    assert alias_concept_task(modeling_unires.UniRESConfig, modeling_unires.UniRESModel)
    assert alias_concept_task(modeling_unires.UniRESConfig, modeling_unires.UniRESModel)  # twice changes nothing
    return AutoModelForStandInConcept


def test_without_the_task_nothing_is_registered():
    if HAS_CONCEPT_TASK:
        pytest.skip("the installed transformers has the task")
    assert alias_concept_task(modeling_unires.UniRESConfig, modeling_unires.UniRESModel) is False
    assert CONCEPT_TASK not in PIPELINE_REGISTRY.get_supported_tasks()


def test_where_transformers_has_the_task_a_unires_checkpoint_gets_this_pipeline(saved, stand_in_task):
    folder, jpeg, png = saved
    entry = PIPELINE_REGISTRY.supported_tasks[CONCEPT_TASK]
    assert entry["impl"] is PromptableConceptSegmentationAlias and entry["pt"] == (stand_in_task,)
    assert PromptableConceptSegmentationAlias.task_pipeline_class is StandInConceptPipeline
    segmenter = pipeline(CONCEPT_TASK, model=str(folder))  # loaded through the task's own auto class
    assert type(segmenter) is ReferringExpressionSegmentationPipeline and segmenter.task == CONCEPT_TASK
    # Built for the task, it takes SAM 3's calls: one image and `text=` gives a list; one string serves every image.
    one = segmenter(jpeg, text="the red car")
    assert isinstance(one, list) and len(one) == 1 and one[0]["label"] == "the red car"
    assert isinstance(one[0]["mask"], torch.Tensor)
    many = segmenter([jpeg, png], text="the dog")
    assert [[r["label"] for r in item] for item in many] == [["the dog"], ["the dog"]]
    assert segmenter(jpeg, text="the red car", threshold=1.0) == []  # `threshold` is the score filter here
    # Any other model still gets the task's own pipeline.
    other_model, other_processor = tiny_model_and_processor(seed=3)
    other_model.config.model_type = "not-unires"
    other = pipeline(CONCEPT_TASK, model=other_model, processor=other_processor)
    assert type(other) is StandInConceptPipeline


@pytest.mark.skipif(not HAS_CONCEPT_TASK, reason=NO_TASK_REASON)
def test_the_real_task_builds_this_pipeline_for_a_unires_checkpoint(saved):
    folder, jpeg, _ = saved
    segmenter = pipeline(CONCEPT_TASK, model=str(folder))
    assert isinstance(segmenter, ReferringExpressionSegmentationPipeline) and segmenter.task == CONCEPT_TASK
    results = segmenter([{"image": jpeg, "text": "the red car"}])
    assert len(results) == 1 and sorted(results[0][0]) == ["box", "label", "mask", "score", "text"]
