"""The evaluation adapter for any `promptable-concept-segmentation` pipeline (transformers pull request 43612).

Where the installed transformers lacks the task, the adapter is tested through a stand-in pipeline object on a tiny
SAM 3 that answers in that pipeline's form (per item a list of instances with `score`, `box` as a dict, `mask` as a
0/1 tensor, `label`, sorted by score, filtered by `threshold`, cut by `top_k`), and through UniRES's own pipeline,
which takes the same form; the test that loads a checkpoint under the real task is skipped with the reason.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_models.unires import tiny_model_and_processor, tiny_tokenizer
from unires.evaluation.segmenters.promptable_concept import (
    CONCEPT_TASK,
    PromptableConceptSegmenter,
    concept_task_available,
)

AVAILABLE, UNAVAILABLE_REASON = concept_task_available()


class Sam3ConceptStandIn:
    """A `promptable-concept-segmentation` pipeline in the shape of transformers' (SAM 3's): items in, per item the
    instances scoring above `threshold`, highest first, each with its box as a dict and its mask as a 0/1 tensor."""

    task = CONCEPT_TASK

    def __init__(self, model, processor):
        self.model, self.processor, self.calls = model, processor, []

    def __call__(self, inputs, threshold=0.3, mask_threshold=0.5, top_k=None):
        self.calls.append({"texts": [item["text"] for item in inputs], "threshold": threshold,
                           "mask_threshold": mask_threshold, "top_k": top_k})
        return [self.instances(item, threshold, mask_threshold, top_k) for item in inputs]

    def instances(self, item, threshold=0.3, mask_threshold=0.5, top_k=None):
        image = item["image"]
        inputs = self.processor(images=image, text=item["text"], return_tensors="pt")
        with torch.no_grad():
            outputs = self.model(**inputs)
        found = self.processor.post_process_instance_segmentation(
            outputs, threshold=threshold, mask_threshold=mask_threshold, target_sizes=[(image.height, image.width)])[0]
        results = [{"score": float(score), "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box.int().tolist())),
                    "mask": mask, "label": item["text"]}
                   for score, box, mask in zip(found["scores"], found["boxes"], found["masks"])]
        results.sort(key=lambda result: result["score"], reverse=True)
        return results if top_k is None else results[:top_k]


@pytest.fixture(scope="module")
def sam3_stand_in():
    from tiny_models.baselines import tiny_sam3

    return Sam3ConceptStandIn(*tiny_sam3(tiny_tokenizer(text_max_length=77), image_size=56))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(5)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 53), (30, 24))]


EXPRESSIONS = [["the dog", "the left ear of the dog"], ["a red car"]]


def test_best_takes_the_top_scoring_instance_whatever_its_score(sam3_stand_in, images):
    segmenter = PromptableConceptSegmenter(sam3_stand_in)
    masks = segmenter.masks(images, EXPRESSIONS)
    # Every expression alone as one item, and the pipeline asked to keep every instance before choosing the best.
    call = sam3_stand_in.calls[-1]
    assert call["texts"] == ["the dog", "the left ear of the dog", "a red car"]
    assert call["threshold"] == 0.0 and call["top_k"] == 1 and call["mask_threshold"] == 0.5
    nonempty = 0
    for image, texts, image_masks in zip(images, EXPRESSIONS, masks):
        for text, mask in zip(texts, image_masks):
            every = sam3_stand_in.instances({"image": image, "text": text}, threshold=0.0)
            best = max(every, key=lambda instance: instance["score"])
            assert mask.dtype == bool and mask.shape == (image.height, image.width)
            assert np.array_equal(mask, best["mask"].numpy() > 0)
            nonempty += int(mask.any())
    assert nonempty > 0  # the comparison is not between empty masks only


def test_union_takes_every_instance_above_the_score_threshold(sam3_stand_in, images):
    image, text = images[0], "the dog"
    every = sam3_stand_in.instances({"image": image, "text": text}, threshold=0.0)
    scores = sorted(instance["score"] for instance in every)
    cut = scores[len(scores) // 2]  # about half of the instances are kept
    kept = [instance for instance in every if instance["score"] > cut]
    assert 1 <= len(kept) < len(every)
    expected = np.logical_or.reduce([instance["mask"].numpy() > 0 for instance in kept])
    segmenter = PromptableConceptSegmenter(sam3_stand_in, instance_rule="union", score_threshold=cut)
    mask = segmenter.masks([image], [[text]])[0][0]
    assert np.array_equal(mask, expected)
    assert sam3_stand_in.calls[-1]["threshold"] == cut and sam3_stand_in.calls[-1]["top_k"] is None
    # No instance above the threshold: an empty mask, not an error.
    nothing = PromptableConceptSegmenter(sam3_stand_in, instance_rule="union", score_threshold=1.0)
    assert not nothing.masks([image], [[text]])[0][0].any()
    conventions = segmenter.conventions()
    assert conventions["model_type"] == "promptable_concept" and conventions["task"] == CONCEPT_TASK
    assert conventions["instance_rule"] == "union" and conventions["score_threshold"] == cut
    assert conventions["pipeline_class"] == "Sam3ConceptStandIn" and conventions["model_class"] == "Sam3Model"


def test_threshold_is_the_pipelines_mask_threshold_and_other_sizes_are_resized(sam3_stand_in, images):
    segmenter = PromptableConceptSegmenter(sam3_stand_in, threshold=0.7)
    mask = segmenter.masks(images[:1], [["the dog"]])[0][0]
    assert sam3_stand_in.calls[-1]["mask_threshold"] == 0.7
    every = sam3_stand_in.instances({"image": images[0], "text": "the dog"}, threshold=0.0, mask_threshold=0.7)
    assert np.array_equal(mask, max(every, key=lambda instance: instance["score"])["mask"].numpy() > 0)
    assert segmenter.conventions()["mask_threshold"] == 0.7
    small = segmenter.masks(images, EXPRESSIONS, sizes=[(16, 16), (8, 12)])
    assert [m.shape for image_masks in small for m in image_masks] == [(16, 16), (16, 16), (8, 12)]


def test_on_unires_pipeline_it_gives_the_pipeline_adapters_masks(images):
    """UniRES's pipeline takes the concept form under its own task name: one result per expression, so the best
    instance is that result, and the masks equal those of the `pipeline` adapter on the same pipeline."""
    from transformers import pipeline

    import modeling_unires
    from unires.evaluation.segmenters import PipelineSegmenter

    model, processor = tiny_model_and_processor(image_size=32)
    pipe = pipeline(modeling_unires.PIPELINE_TASK, model=model, processor=processor)
    concept = PromptableConceptSegmenter(pipe).masks(images, EXPRESSIONS)
    plain = PipelineSegmenter(pipe).masks(images, EXPRESSIONS)
    assert [[m.shape for m in ms] for ms in concept] == [[(37, 53), (37, 53)], [(30, 24)]]
    for concept_masks, plain_masks in zip(concept, plain):
        for one, other in zip(concept_masks, plain_masks):
            assert np.array_equal(one, other)
    assert PromptableConceptSegmenter(pipe).input_size == 32


def test_refusals_name_the_reason(sam3_stand_in, images):
    class ImageSegmentation:
        task = "image-segmentation"

    with pytest.raises(ValueError, match=r"pipeline task 'image-segmentation' is not supported"):
        PromptableConceptSegmenter(ImageSegmentation())
    with pytest.raises(ValueError, match=r"instance_rule must be one of \('best', 'union'\)"):
        PromptableConceptSegmenter(sam3_stand_in, instance_rule="all")

    class AnswersTooFew(Sam3ConceptStandIn):
        def __call__(self, inputs, **options):
            return super().__call__(inputs, **options)[:-1]

    short = PromptableConceptSegmenter(AnswersTooFew(sam3_stand_in.model, sam3_stand_in.processor))
    with pytest.raises(ValueError, match=r"answered 2 item\(s\) for 3: expected one list of instances per"):
        short.masks(images, EXPRESSIONS)


@pytest.mark.skipif(AVAILABLE, reason="the installed transformers has the promptable-concept-segmentation task")
def test_without_the_task_loading_is_refused_with_the_reason():
    import transformers

    from unires.evaluation.segmenters import load_segmenter

    assert "pull request 43612" in UNAVAILABLE_REASON and transformers.__version__ in UNAVAILABLE_REASON
    with pytest.raises(ValueError, match=r"model_type promptable_concept is unavailable: transformers .* has no "
                                         r"'promptable-concept-segmentation' pipeline task"):
        load_segmenter("promptable_concept", "facebook/sam3")


@pytest.mark.skipif(not AVAILABLE, reason=UNAVAILABLE_REASON)
def test_a_unires_checkpoint_loads_under_the_real_task(tmp_path, images):
    from unires.evaluation.segmenters import load_segmenter

    model, processor = tiny_model_and_processor(image_size=32)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    segmenter = load_segmenter("promptable_concept", str(tmp_path), device="cpu")
    assert segmenter.task == CONCEPT_TASK
    masks = segmenter.masks(images, EXPRESSIONS)
    assert [[m.shape for m in ms] for ms in masks] == [[(37, 53), (37, 53)], [(30, 24)]]
