"""`post_process_masks` thresholds in logit space: the masks stay bit-for-bit those of the probability path it had.

`reference_post_process` below is that path, kept here as it was (resize per size, sigmoid, `> threshold`, scores
from the probabilities); the tests compare the processor against it over odd sizes, several images, thresholds and
logits placed exactly on the threshold.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modeling_unires import UniRESImageProcessor
from modeling_unires.image_processing_unires import logit_threshold


def reference_post_process(logits, sizes, threshold):
    """The probability path: every mask resized with the others of its size, `sigmoid > threshold`; the score is the
    mean probability inside the mask, or the highest probability for an empty mask."""
    masks, scores = [None] * len(sizes), [None] * len(sizes)
    rows_by_size = {}
    for row, size in enumerate(sizes):
        rows_by_size.setdefault(tuple(size), []).append(row)
    for size, rows in rows_by_size.items():
        probabilities = F.interpolate(logits[rows][:, None].float(), size=size, mode="bilinear",
                                      align_corners=False)[:, 0].sigmoid_()
        binary = probabilities > threshold
        area = binary.sum(dim=(1, 2))
        inside = (probabilities * binary).sum(dim=(1, 2)) / area.clamp(min=1)
        part_scores = torch.where(area > 0, inside, probabilities.amax(dim=(1, 2)))
        for offset, row in enumerate(rows):
            masks[row] = binary[offset].numpy()
            scores[row] = float(part_scores[offset])
    return masks, scores


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
def test_masks_are_bit_equal_to_the_probability_path(threshold):
    processor = UniRESImageProcessor(size=24)
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
    masks, scores = processor.post_process_masks(logits, sizes, threshold=threshold, image_indices=image_indices,
                                                 return_scores=True)
    expected_masks, expected_scores = reference_post_process(logits, [sizes[i] for i in image_indices], threshold)
    for row, (mask, expected) in enumerate(zip(masks, expected_masks)):
        assert mask.dtype == np.bool_ and mask.shape == expected.shape, row
        assert np.array_equal(mask, expected), f"mask {row} differs at threshold {threshold}"
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-7)
    # Masks only, and RLE: the same masks.
    assert all(np.array_equal(a, b) for a, b in zip(
        processor.post_process_masks(logits, sizes, threshold=threshold, image_indices=image_indices), masks))


def test_large_masks_in_bounded_chunks_are_bit_equal():
    """Enough masks of one size that they go through in several chunks; a 640x480 size, as the benchmark's."""
    processor = UniRESImageProcessor(size=32)
    logits = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(3)) * 3
    masks, scores = processor.post_process_masks(logits, [(480, 640)], return_scores=True)
    expected_masks, expected_scores = reference_post_process(logits, [(480, 640)] * 3, 0.35)
    assert all(np.array_equal(a, b) for a, b in zip(masks, expected_masks))
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5)


def test_logits_that_carry_a_gradient_are_post_processed_like_detached_ones():
    # A forward outside torch.no_grad() hands over logits that require grad: the masks and scores are the same.
    processor = UniRESImageProcessor(size=24)
    logits = torch.randn(3, 24, 24, generator=torch.Generator().manual_seed(0)) * 4
    masks, scores = processor.post_process_masks(logits.clone().requires_grad_(), [(30, 41)], return_scores=True)
    expected_masks, expected_scores = processor.post_process_masks(logits, [(30, 41)], return_scores=True)
    assert all(np.array_equal(a, b) for a, b in zip(masks, expected_masks)) and scores == expected_scores
