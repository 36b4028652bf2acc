"""The image processor's fast post-processing for a CPU: the same masks as [`UniRESImageProcessor`], bit for bit.

As transformers keeps `image_processing_sam_fast.py` beside `image_processing_sam.py`, [`UniRESImageProcessorFast`]
keeps the plain processor's preprocessing and API and replaces the kernel of `post_process_masks` (resize, then
threshold):
- the threshold is applied to the logits: `x >= logit_threshold(t)` gives the masks of `sigmoid(x) > t` bit for bit
  (found by a bisection over float32 bit patterns, checked against torch's sigmoid), so no sigmoid runs over every
  pixel;
- on a CPU one mask at a time is resized into one reused float buffer and compared by numpy straight into the masks'
  array, and a score's sigmoid runs on the logits inside its mask only.

The scores are those of the plain processor to float rounding (the sums run in another order). This file travels
beside saved checkpoints with the pipeline that imports it (remote code): it imports numpy, torch, transformers and
the image processor beside it.
"""

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .image_processing_unires import UniRESImageProcessor


class UniRESImageProcessorFast(UniRESImageProcessor):
    """[`UniRESImageProcessor`] with the fast logits-to-masks kernel (same masks, scores to float rounding)."""

    @classmethod
    def from_plain(cls, image_processor: UniRESImageProcessor) -> "UniRESImageProcessorFast":
        """The fast processor with `image_processor`'s settings."""
        return cls(
            size=image_processor.size, resample=image_processor.resample, do_normalize=image_processor.do_normalize,
            image_mean=image_processor.image_mean, image_std=image_processor.image_std,
            mask_threshold=image_processor.mask_threshold,
        )

    def _threshold_resized(self, logits, rows, size, threshold, return_scores):
        """
        The masks (bool arrays sharing one buffer) and, on request, the scores of `logits[rows]` resized to `size`:
        bilinear resizing, then one comparison in logit space (`x >= logit_threshold(t)`) instead of a sigmoid over
        every pixel. A threshold without an exact logit-space equivalent takes the plain kernel.
        """
        consecutive = rows == list(range(rows[0], rows[0] + len(rows)))
        selected = logits[rows[0] : rows[0] + len(rows)] if consecutive else logits[rows]  # a view, not a copy
        cut = logit_threshold(threshold, selected.device.type)
        if cut is None:
            return super()._threshold_resized(logits, rows, size, threshold, return_scores)
        if selected.device.type == "cpu":
            return _threshold_on_cpu(selected.float(), size, cut, return_scores)
        resized = F.interpolate(selected[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        binary = resized >= cut
        scores = None
        if return_scores:
            area = binary.sum(dim=(1, 2))
            probabilities = resized.sigmoid()
            inside = torch.where(binary, probabilities, 0.0).sum(dim=(1, 2)) / area.clamp(min=1)
            scores = torch.where(area > 0, inside, probabilities.amax(dim=(1, 2))).tolist()
        return list(binary.cpu().numpy()), scores


def _threshold_on_cpu(logits, size, cut, return_scores):
    """
    `_threshold_resized` on a CPU: one mask at a time is resized into one float buffer (torch's bilinear kernel, the
    one of `F.interpolate`) and compared by numpy straight into the masks' array (numpy writes bools 3x faster than
    torch); for its score, the logits inside the mask are gathered, so that the sigmoid runs on those alone. One
    buffer for all the masks: a buffer as large as all of them (20 MB for 16 at 640x480) has its pages faulted into
    memory anew at every call, which cost as much as the resize.
    """
    binary = np.empty((len(logits), *size), dtype=bool)
    resized = torch.empty(1, 1, *size)
    values = resized.numpy()[0, 0]
    scores = [] if return_scores else None
    for row, mask in enumerate(binary):
        torch.ops.aten.upsample_bilinear2d.out(logits[row][None, None], list(size), False, None, None, out=resized)
        np.greater_equal(values, cut, out=mask)
        if return_scores:
            inside = torch.from_numpy(values[mask])
            # An empty mask's score is the sigmoid of its highest logit (a low score flags it).
            scores.append(float(inside.sigmoid_().mean() if len(inside) else resized.max().sigmoid()))
    return list(binary), scores


@functools.lru_cache(maxsize=64)
def logit_threshold(threshold: float, device_type: str = "cpu"):
    """
    The float32 value `c` with `sigmoid(x) > threshold` exactly when `x >= c`, for every float32 `x`, as torch's
    sigmoid on `device_type` computes it (its vectorised loop and its scalar one: both are checked over the 2**15
    float32 values around the point where the comparison turns), so that masks can be thresholded on logits bit for
    bit as on probabilities. `None` for 0, 1, or a threshold where the two loops disagree or the comparison is not
    monotone (the caller then computes probabilities).
    """
    if not 0.0 < threshold < 1.0:
        return None

    def floats(keys):  # float32 values of ordered keys (a float's bit pattern; negative floats reversed)
        patterns = torch.where(keys >= 0, keys, (-keys) | 0x80000000).numpy().astype(np.uint32)
        return torch.from_numpy(patterns.view(np.float32)).to(device_type)

    def above(keys):  # sigmoid > threshold in the vectorised loop (the padding takes the scalar tail)
        values = floats(keys)
        return (torch.cat([values, values[:1].expand(64)]).sigmoid()[: len(values)] > threshold).cpu()

    # Bisection for the first float above (sigmoid is monotone), then a check of the 2**15 floats around it.
    low, high = -0x7F800000, 0x7F800000  # -inf, +inf
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if bool(above(torch.tensor([middle]))[0]) else (middle, high)
    keys = torch.arange(high - (1 << 14), high + (1 << 14), dtype=torch.int64)
    candidates = floats(keys)
    # The vectorised loop (contiguous, the padding takes the scalar tail) and the scalar loop (a strided view).
    vectorised = torch.cat([candidates, candidates[:64]]).sigmoid()[: len(candidates)] > threshold
    scalar = torch.stack([candidates, candidates], dim=1)[:, 0].sigmoid() > threshold
    if not torch.equal(vectorised, scalar):
        return None
    turned = vectorised.nonzero().flatten()
    if len(turned) == 0 or turned[0] == 0 or not bool(vectorised[int(turned[0]) :].all()):
        return None
    return float(candidates[int(turned[0])])


def use_fast_image_processor(processor):
    """A shallow copy of a `UniRESProcessor` whose image processor is [`UniRESImageProcessorFast`] (the caller's
    processor is left as it is); a processor whose image processor is not the plain UniRES one is returned as is."""
    import copy

    if type(processor.image_processor).__name__ != "UniRESImageProcessor":
        return processor
    fast = copy.copy(processor)
    fast.image_processor = UniRESImageProcessorFast.from_plain(processor.image_processor)
    return fast


__all__ = ["UniRESImageProcessorFast", "logit_threshold", "use_fast_image_processor"]
