"""One inference path: the pipeline, the evaluator's predictor and the app all go processor -> model ->
post_process_masks, so the same image and expressions give the same masks and scores everywhere, and NaN logits are
named by post_process_masks for every caller alike."""

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

import modeling_unires  # noqa: F401  (registers the task)
from modeling_unires.image_processing_unires import NaNLogitsError
from tiny_models.unires import TINY_SENTENCES, tiny_model_and_processor
from unires.app import Segmenter, SessionState, UniRESApp
from unires.evaluation.segmenters import UniRESSegmenter

PIXEL_BRANCH = {"pixel_decoder_channels": 4, "decoder_token_stride": 2}  # the demo model's options
EXPRESSIONS = TINY_SENTENCES[:3]


def _image(seed=0, height=37, width=53):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _callers(model, processor):
    """Masks and scores of the pipeline, the evaluator and the app, for one image and EXPRESSIONS."""
    image = _image()
    size = (image.height, image.width)
    segmenter = pipeline("referring-expression-segmentation", model=model, processor=processor, device="cpu")
    by_pipeline = segmenter(image, EXPRESSIONS, mask_format="numpy")

    def by_evaluator():
        row = {"image": image, "image_id": "image-0", "height": size[0], "width": size[1]}
        evaluator = UniRESSegmenter(model, processor)
        return evaluator.masks_of_rows([row], [EXPRESSIONS], [(row["height"], row["width"])])[0]

    def by_app():
        app_segmenter, state = Segmenter(model, processor, device="cpu"), SessionState()
        state.set_image(app_segmenter, image, "fingerprint")
        state.ask(app_segmenter, EXPRESSIONS)
        return app_segmenter.masks(state.current_logits(), state.encoded.size, app_segmenter.default_threshold,
                                   texts=state.expressions)

    return by_pipeline, by_evaluator, by_app


@pytest.mark.parametrize("overrides", [{}, PIXEL_BRANCH], ids=["paper-decoder", "pixel-branch"])
def test_pipeline_evaluator_and_app_give_the_same_masks(overrides):
    model, processor = tiny_model_and_processor(seed=3, **overrides)
    by_pipeline, by_evaluator, by_app = _callers(model, processor)
    evaluator_masks = by_evaluator()
    app_masks, app_scores = by_app()
    assert [result["text"] for result in by_pipeline] == EXPRESSIONS
    assert len(evaluator_masks) == len(app_masks) == len(EXPRESSIONS)
    for result, evaluator_mask, app_mask, app_score in zip(by_pipeline, evaluator_masks, app_masks, app_scores):
        assert result["mask"].shape == (37, 53) and result["mask"].dtype == np.bool_
        assert np.array_equal(result["mask"], evaluator_mask) and np.array_equal(result["mask"], app_mask)
        assert result["score"] == pytest.approx(app_score, abs=1e-6)
    assert any(result["mask"].any() for result in by_pipeline)  # not trivially equal: something is segmented


def test_every_caller_gets_the_nan_expressions_named_by_post_process_masks(monkeypatch, tmp_path):
    model, processor = tiny_model_and_processor(seed=3)
    original_forward = model.forward

    def nan_for_the_second_expression(*args, **kwargs):
        outputs = original_forward(*args, **kwargs)
        outputs.logits[1] = float("nan")
        return outputs

    monkeypatch.setattr(model, "forward", nan_for_the_second_expression)
    image = _image()
    segmenter = pipeline("referring-expression-segmentation", model=model, processor=processor, device="cpu")
    named = r"NaN mask logits for the expression\(s\) \['" + EXPRESSIONS[1] + r"'\] \(mask\(s\) \[1\]\)"
    with pytest.raises(NaNLogitsError, match=named):
        segmenter(image, EXPRESSIONS)
    row = {"image": image, "image_id": "image-0", "height": image.height, "width": image.width}
    with pytest.raises(NaNLogitsError, match=named):
        UniRESSegmenter(model, processor).masks_of_rows([row], [EXPRESSIONS], [(row["height"], row["width"])])
    app_segmenter, state = Segmenter(model, processor, device="cpu"), SessionState()
    state.set_image(app_segmenter, image, "fingerprint")
    state.ask(app_segmenter, EXPRESSIONS)
    with pytest.raises(NaNLogitsError, match=named):
        app_segmenter.masks(state.current_logits(), state.encoded.size, 0.35, texts=state.expressions)
    # On the page, the same message.
    path = tmp_path / "image.png"
    image.save(path)
    output = UniRESApp(app_segmenter, download_dir=tmp_path / "downloads").segment(
        str(path), "\n".join(EXPRESSIONS), 0.35, SessionState())
    assert output.message.startswith("⚠️") and f"['{EXPRESSIONS[1]}']" in output.message and output.overlay is None
