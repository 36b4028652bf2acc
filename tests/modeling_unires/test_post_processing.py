"""The plain image processor (resize, then `sigmoid > threshold`) against the fast one (threshold in logit space,
numpy on the CPU): two objects, bit-equal masks and scores to float rounding, over odd sizes, several images,
thresholds, logits placed exactly on the cut, ±inf; and the checks both share.
"""

import numpy as np
import pytest
import torch

from modeling_unires import UniRESImageProcessor, UniRESImageProcessorFast
from modeling_unires.image_processing_unires_fast import logit_threshold

PROCESSOR_CLASSES = [UniRESImageProcessor, UniRESImageProcessorFast]


def _plain_and_fast(logits, sizes, threshold, image_indices=None, size=24):
    """`((masks, scores) of the plain processor, (masks, scores) of the fast one)`."""
    return [
        processor_class(size=size).post_process_masks(logits, sizes, threshold=threshold, image_indices=image_indices,
                                                      return_scores=True)
        for processor_class in PROCESSOR_CLASSES
    ]


def _assert_same(plain, fast, what=""):
    (plain_masks, plain_scores), (fast_masks, fast_scores) = plain, fast
    for row, (mask, expected) in enumerate(zip(fast_masks, plain_masks)):
        assert mask.dtype == np.bool_ and mask.shape == expected.shape, row
        assert np.array_equal(mask, expected), f"mask {row} differs {what}"
    np.testing.assert_allclose(fast_scores, plain_scores, rtol=1e-5, atol=1e-7)


THRESHOLDS = [0.35, 0.5, 0.1, 0.9, 0.0, 1.0, 1e-4, 0.999]


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_logit_threshold_matches_the_sigmoid_comparison_around_the_cut(threshold):
    cut = logit_threshold(threshold)
    if threshold in (0.0, 1.0):
        assert cut is None
        return
    assert cut is not None
    # The floats around the cut, and a spread of ordinary logits: `x >= cut` is `sigmoid(x) > threshold` on each.
    near = torch.tensor(cut, dtype=torch.float32) + torch.arange(-4096, 4096, dtype=torch.float32) * 1e-7 * max(1, abs(cut))
    values = torch.cat([near, torch.linspace(-30, 30, 100_003), torch.tensor([cut, float("inf"), float("-inf")])])
    assert torch.equal(values >= cut, values.sigmoid() > threshold)


@pytest.mark.parametrize("threshold", THRESHOLDS)
def test_fast_masks_are_bit_equal_to_the_plain_processors(threshold):
    generator = torch.Generator().manual_seed(int(threshold * 1000))
    # Three images of odd sizes (smaller and larger than the logits), 2, 3 and 1 expressions.
    sizes = [(37, 53), (91, 17), (5, 3)]
    image_indices = [0, 0, 1, 1, 1, 2]
    logits = torch.randn(6, 24, 24, generator=generator) * 4
    cut = logit_threshold(threshold)
    if cut is not None:  # ties: logits exactly on the cut, and one float below it
        logits[0, :4] = cut
        logits[1, :4] = float(np.nextafter(np.float32(cut), np.float32(-np.inf)))
    logits[2] = -20.0  # an empty mask (the score is then the highest probability)
    plain, fast = _plain_and_fast(logits, sizes, threshold, image_indices)
    _assert_same(plain, fast, f"at threshold {threshold}")
    if threshold > 0:  # -20 is below every other cut: an empty mask, scored by its highest probability
        assert not plain[0][2].any() and plain[1][2] < 0.01
    # Masks only: the same masks.
    masks_only = UniRESImageProcessorFast(size=24).post_process_masks(logits, sizes, threshold=threshold,
                                                                      image_indices=image_indices)
    assert all(np.array_equal(a, b) for a, b in zip(masks_only, plain[0]))


def test_large_masks_in_bounded_chunks_are_bit_equal():
    """Enough masks of one size that they go through in several chunks; a 640x480 size, as the benchmark's."""
    logits = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(3)) * 3
    plain, fast = _plain_and_fast(logits, [(480, 640)], 0.35, size=32)
    _assert_same(plain, fast)


@pytest.mark.parametrize("processor_class", PROCESSOR_CLASSES)
def test_logits_that_carry_a_gradient_are_post_processed_like_detached_ones(processor_class):
    # A forward outside torch.no_grad() hands over logits that require grad: the masks and scores are the same.
    processor = processor_class(size=24)
    logits = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(0)) * 4
    masks, scores = processor.post_process_masks(logits.clone().requires_grad_(), [(30, 41)], return_scores=True)
    expected_masks, expected_scores = processor.post_process_masks(logits, [(30, 41)], return_scores=True)
    assert all(np.array_equal(a, b) for a, b in zip(masks, expected_masks)) and scores == expected_scores


INF = float("inf")
# Upscaled, downscaled, odd and equal sizes: bilinear weights of 0 (where inf * 0 was NaN), 1/2 and others.
INF_SIZES = [(37, 53), (5, 3), (24, 24), (91, 17)]


@pytest.mark.parametrize("processor_class", PROCESSOR_CLASSES)
@pytest.mark.parametrize("threshold", [0.35, 0.0])  # the logit-space CPU path, and the probability path
def test_all_infinite_logits_give_a_full_or_an_empty_mask_and_a_finite_score(threshold, processor_class):
    """All +inf is a full mask of score 1, all -inf an empty one of score 0 (an empty mask's score is its highest
    probability). Resized as they were, inf - inf and inf * 0 made NaN: a partial +inf mask, a NaN -inf score."""
    processor = processor_class(size=24)
    logits = torch.stack([torch.full((24, 24), INF), torch.full((24, 24), -INF)] * 2)
    sizes, image_indices = INF_SIZES, [0, 1, 2, 3]
    masks, scores = processor.post_process_masks(logits, sizes, threshold=threshold, image_indices=image_indices,
                                                 return_scores=True)
    for row, (mask, score) in enumerate(zip(masks, scores)):
        assert mask.shape == sizes[row]
        if row % 2 == 0:
            assert mask.all() and score == 1.0, (row, mask.mean(), score)
        else:
            assert not mask.any() and score == 0.0, (row, score)


@pytest.mark.parametrize("processor_class", PROCESSOR_CLASSES)
@pytest.mark.parametrize("threshold", [0.35, 0.5, 0.0])
def test_mixed_infinite_logits_mask_as_a_large_finite_stand_in_would(threshold, processor_class):
    """±inf maps, and ±inf among finite logits: the masks of ±1e4 in their place (given to the plain processor),
    finite scores."""
    processor = processor_class(size=24)
    generator = torch.Generator().manual_seed(7)
    logits = torch.randn(8, 24, 24, generator=generator) * 4
    infinite = torch.rand(8, 24, 24, generator=generator)
    logits[:4] = torch.where(infinite[:4] < 0.5, INF, -INF)  # only ±inf, scattered
    logits[4, 3:11, 5:20], logits[5, :, :9] = INF, -INF  # blocks of ±inf beside finite logits
    logits[6] = torch.where(infinite[6] < 0.2, INF, torch.where(infinite[6] > 0.8, -INF, logits[6]))
    logits[7, :12], logits[7, 12:] = INF, -INF
    image_indices = [0, 1, 2, 3, 0, 1, 2, 3]
    masks, scores = processor.post_process_masks(logits, INF_SIZES, threshold=threshold, image_indices=image_indices,
                                                 return_scores=True)
    stand_in = torch.nan_to_num(logits, posinf=1e4, neginf=-1e4)
    expected_masks, expected_scores = UniRESImageProcessor(size=24).post_process_masks(
        stand_in, INF_SIZES, threshold=threshold, image_indices=image_indices, return_scores=True)
    for row, (mask, expected) in enumerate(zip(masks, expected_masks)):
        assert np.array_equal(mask, expected), f"mask {row} differs from the ±1e4 stand-in's"
    assert all(np.isfinite(score) and 0.0 <= score <= 1.0 for score in scores), scores
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
    # The caller's logits are left as they were.
    assert torch.isinf(logits[:4]).all()


def test_nan_logits_still_raise_beside_infinite_ones():
    processor = UniRESImageProcessor(size=8)
    logits = torch.full((3, 8, 8), INF)
    logits[1, 0, 0] = float("nan")
    logits[1, 0, 1] = -INF
    with pytest.raises(ValueError, match=r"NaN mask logits for the expression\(s\) \['b'\] \(mask\(s\) \[1\]\)"):
        processor.post_process_masks(logits, [(5, 5)], texts=["a", "b", "c"])


@pytest.mark.parametrize(
    "image_indices, named",
    [([0.0, 0.5, 1.0], r"\[1\]=0\.5"), (torch.tensor([0.0, 0.5, 1.0]), r"\[1\]=0\.5"),
     (np.array([0.0, 0.5, 1.0]), r"\[1\]=0\.5"), (torch.tensor([0.0, 1.0, 1.0]), r"\[0\]=0\.0"),
     ([0, "1", 1], r"\[1\]='1'"), ([0, True, 1], r"\[1\]=True")],
    ids=["list", "tensor", "numpy", "whole-floats", "string", "bool"],
)
def test_image_indices_must_be_integers(image_indices, named):
    """0.5 was read as image 0 (and whole floats, strings and bools taken as indices)."""
    processor = UniRESImageProcessor(size=8)
    message = r"image_indices" + named + " is not an integer: image_indices must be integers"
    with pytest.raises(ValueError, match=message):
        processor.post_process_masks(torch.zeros(3, 8, 8), [(4, 4), (5, 5)], image_indices=image_indices)


@pytest.mark.parametrize(
    "image_indices",
    [[1, 0, 1], (1, 0, 1), torch.tensor([1, 0, 1]), torch.tensor([1, 0, 1], dtype=torch.int32), np.array([1, 0, 1]),
     [np.int64(1), np.int32(0), torch.tensor(1)]],
    ids=["list", "tuple", "int64-tensor", "int32-tensor", "numpy", "numpy-and-torch-scalars"],
)
def test_integer_image_indices_of_every_kind_are_taken(image_indices):
    processor = UniRESImageProcessor(size=8)
    logits = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1))
    masks = processor.post_process_masks(logits, [(4, 6), (5, 3)], image_indices=image_indices)
    assert [mask.shape for mask in masks] == [(5, 3), (4, 6), (5, 3)]


@pytest.mark.parametrize("sizes", [(480, 640), [480, 640], torch.tensor([480, 640]), np.array([480, 640])])
def test_a_bare_size_pair_is_refused_naming_the_argument(sizes):
    """It gave `TypeError: 'int' object is not iterable`."""
    processor = UniRESImageProcessor(size=8)
    message = r"original_sizes=\(480, 640\) is one \(height, width\) pair.*pass \[\(480, 640\)\]"
    with pytest.raises(ValueError, match=message):
        processor.post_process_masks(torch.zeros(1, 8, 8), sizes)


@pytest.mark.parametrize("sizes, bad", [([(4, 4), 5], r"original_sizes\[1\]=5"), ([(4, 4.5)], r"original_sizes\[0\]"),
                                        ([(4, 0)], r"original_sizes\[0\]"), ("480x640", "original_sizes='480x640'")])
def test_malformed_sizes_are_refused_naming_the_item(sizes, bad):
    processor = UniRESImageProcessor(size=8)
    with pytest.raises(ValueError, match=bad):
        processor.post_process_masks(torch.zeros(1, 8, 8), sizes)
