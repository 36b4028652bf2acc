"""Referring-segmentation metrics for MRES: mIoU, oIoU, Prec@X and the part-object confusion.

Every sentence is one expression and is scored on its own. Scores are reported for three
settings: object-only, part-only and object+part (all expressions).

Published methods disagree on a few choices that change the numbers; each is an explicit,
recorded option (:class:`MRESMetricOptions`) whose default follows CRIS, the lineage of the
reference paper:

- ``resolution``: masks are compared at the original image size (``"original"``, default) or
  at the network input size (``"input"``, e.g. 480x480 as LAVT does). The option is
  *recorded* only: resizing masks to the chosen resolution is the caller's job.
- ``threshold``: probabilities become a mask with ``probability > threshold`` (0.35), see
  :func:`binarize`. The accumulator itself receives boolean masks.
- ``prec_comparison``: Prec@X counts expressions with IoU ``>= X`` (default) or ``> X`` (CRIS).
- ``empty_gt``: how 0/0 (empty ground truth and empty prediction) counts:
  ``"one_if_both_empty"`` (IoU 1, default) or ``"zero"`` (IoU 0, as code that adds an epsilon
  to the union does). An empty ground truth with a non-empty prediction is always IoU 0.

Accumulation is streaming: :class:`MRESMetricAccumulator` keeps a few scalars per expression
(intersection, union, IoU with the parent object), never the masks. Masks may be boolean
numpy arrays, torch tensors (counted on their own device, only the counts move), or COCO RLE
dicts (``{"size": [h, w], "counts": str | bytes | list[int]}``), which are intersected with
pycocotools without decoding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from dataset_scripts.features import GRANULARITIES
from dataset_scripts.masks import encode_mask, to_coco_rle
from modeling_unires.configuration_unires import DEFAULT_MASK_THRESHOLD

GROUPS = ("object", "part", "object+part")
RESOLUTIONS = ("original", "input")
PREC_COMPARISONS = (">=", ">")
EMPTY_GT_RULES = ("one_if_both_empty", "zero")

_GRANULARITY_CODE = {name: code for code, name in enumerate(GRANULARITIES)}
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")  # numpy >= 2.0


@dataclass
class MRESMetricOptions:
    """The choices that make referring-segmentation numbers comparable; written into every result.

    Args:
        resolution (`str`, defaults to `"original"`):
            `"original"`: masks are compared at the original image size (CRIS, the reference
            paper). `"input"`: at the network input size (LAVT compares at 480x480). Recorded
            only; the caller resizes the masks before passing them.
        input_size (`tuple[int, int]`, *optional*):
            `(height, width)` of the input resolution, recorded when `resolution="input"`.
        threshold (`float`, defaults to 0.35):
            Probability above which a pixel is foreground (see [`binarize`]).
        prec_thresholds (`tuple[float, ...]`, defaults to `(0.5, 0.6, 0.7, 0.8, 0.9)`):
            IoU thresholds X of the Prec@X columns.
        prec_comparison (`str`, defaults to `">="`):
            `">="` counts IoU >= X as a hit; `">"` counts IoU > X (as CRIS's code does).
        empty_gt (`str`, defaults to `"one_if_both_empty"`):
            IoU of an empty prediction against an empty ground truth: `"one_if_both_empty"`
            gives 1, `"zero"` gives 0. A non-empty prediction on an empty ground truth is 0.
    """

    resolution: str = "original"
    threshold: float = DEFAULT_MASK_THRESHOLD
    prec_thresholds: tuple = (0.5, 0.6, 0.7, 0.8, 0.9)
    prec_comparison: str = ">="
    empty_gt: str = "one_if_both_empty"
    input_size: Optional[tuple] = field(default=None)

    def __post_init__(self):
        if self.resolution not in RESOLUTIONS:
            raise ValueError(f"Option `resolution` must be one of {RESOLUTIONS}, got {self.resolution!r}.")
        if self.input_size is not None:
            if self.resolution != "input":
                raise ValueError(
                    f"Option `input_size` ({self.input_size!r}) is only meaningful with resolution='input', "
                    f"got resolution={self.resolution!r}."
                )
            size = tuple(self.input_size)
            if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
                raise ValueError(
                    f"Option `input_size` must be (height, width) of positive ints, got {self.input_size!r}."
                )
            self.input_size = (int(size[0]), int(size[1]))
        if not _is_real(self.threshold) or not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"Option `threshold` must be a probability in [0, 1], got {self.threshold!r}.")
        self.threshold = float(self.threshold)
        if isinstance(self.prec_thresholds, (str, bytes)) or not isinstance(self.prec_thresholds, Sequence):
            raise ValueError(f"Option `prec_thresholds` must be a sequence of floats, got {self.prec_thresholds!r}.")
        if len(self.prec_thresholds) == 0:
            raise ValueError("Option `prec_thresholds` must not be empty.")
        for value in self.prec_thresholds:
            if not _is_real(value) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"Option `prec_thresholds` holds {value!r}, which is not an IoU in [0, 1].")
        self.prec_thresholds = tuple(float(value) for value in self.prec_thresholds)
        if len(set(self.prec_thresholds)) != len(self.prec_thresholds):
            raise ValueError(f"Option `prec_thresholds` has duplicates: {self.prec_thresholds!r}.")
        if self.prec_comparison not in PREC_COMPARISONS:
            raise ValueError(
                f"Option `prec_comparison` must be one of {PREC_COMPARISONS}, got {self.prec_comparison!r}."
            )
        if self.empty_gt not in EMPTY_GT_RULES:
            raise ValueError(f"Option `empty_gt` must be one of {EMPTY_GT_RULES}, got {self.empty_gt!r}.")

    def to_dict(self) -> dict:
        """JSON-ready copy of the options (tuples become lists)."""
        options = asdict(self)
        options["prec_thresholds"] = list(self.prec_thresholds)
        options["input_size"] = list(self.input_size) if self.input_size is not None else None
        return options

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "MRESMetricOptions":
        """Inverse of [`to_dict`]; unknown keys raise a ValueError that names them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"Unknown metric option(s) {unknown}; known options are {sorted(known)}.")
        return cls(**options)

    def prec_key(self, threshold: float) -> str:
        """Result key of one Prec@X column, e.g. `"Prec@0.5"`."""
        return f"Prec@{threshold:g}"


def _is_real(value) -> bool:
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return is_number and math.isfinite(value)


def binarize(probabilities, threshold: float = DEFAULT_MASK_THRESHOLD, from_logits: bool = False):
    """Turn per-pixel probabilities (or logits) into a boolean mask: `probability > threshold`.

    Works on numpy arrays and torch tensors alike and returns the same kind. The comparison is
    strict, as in CRIS's evaluation code. NaN anywhere raises ``ValueError`` (a NaN compares false, so it
    would silently read as background): a model that produced NaN logits needs fixing, not scoring.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"`threshold` must be a probability in [0, 1], got {threshold!r}.")
    _refuse_nan(probabilities, "logits" if from_logits else "probabilities")
    # In float32 or wider: a float16 map compares against the threshold rounded to float16 (0.35 -> 0.35009766),
    # so a probability of 0.35009766 would count as background.
    if _is_torch_tensor(probabilities):
        if probabilities.is_floating_point() and probabilities.element_size() < 4:
            probabilities = probabilities.float()
        if from_logits:
            probabilities = probabilities.float().sigmoid()
        return probabilities > threshold
    probabilities = np.asarray(probabilities)
    if np.issubdtype(probabilities.dtype, np.floating) and probabilities.dtype.itemsize < 4:
        probabilities = probabilities.astype(np.float32)
    if from_logits:
        # sigmoid(x) > t  <=>  x > logit(t); avoids overflow in exp for large logits.
        if threshold <= 0.0:
            return np.ones(probabilities.shape, dtype=bool)
        if threshold >= 1.0:
            return np.zeros(probabilities.shape, dtype=bool)
        return probabilities > math.log(threshold / (1.0 - threshold))
    return probabilities > threshold


def _refuse_nan(values, name: str) -> None:
    nan = values.isnan() if _is_torch_tensor(values) else np.isnan(np.asarray(values, dtype=float))
    if bool(nan.any()):
        first = tuple(int(i) for i in nan.nonzero()[0]) if _is_torch_tensor(nan) else tuple(int(a[0]) for a in nan.nonzero())
        count = int(nan.sum())
        raise ValueError(f"binarize: {count} NaN value(s) in the {name} (first at index {first}); NaN would count "
                         "as background. Check the model's output (e.g. fp16 overflow) before thresholding.")


# ----------------------------------------------------------------------------------------------
# Input normalisation


def _is_torch_tensor(value) -> bool:
    # No torch import here: the metrics must not require torch for numpy/RLE inputs.
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def _as_bool_array(mask, name: str) -> np.ndarray:
    """Boolean numpy view of a mask; refuses probabilities so that nothing is thresholded silently."""
    if _is_torch_tensor(mask):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim >= 2 and 0 in array.shape[-2:]:
        raise ValueError(f"{name} has an empty shape {tuple(array.shape)}: a mask needs height and width > 0.")
    if array.dtype == bool:
        return array
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(
                f"{name} is an integer mask with values outside {{0, 1}} (min {array.min()}, max {array.max()}); "
                "pass a boolean mask, e.g. `mask > 0`."
            )
        return array.astype(bool)
    raise ValueError(
        f"{name} has dtype {array.dtype}; pass a boolean mask (use `binarize(probabilities, threshold)` "
        "for probabilities or logits)."
    )


def _mask_size(mask) -> tuple:
    if isinstance(mask, dict):
        return (mask["size"][0], mask["size"][1])
    return tuple(mask.shape)


def _normalise_item(mask, name: str):
    """One mask as either a compressed RLE dict or a 2-D bool numpy array."""
    if isinstance(mask, Mapping):
        return to_coco_rle(mask, name)
    array = _as_bool_array(mask, name)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (height, width) mask, got shape {tuple(array.shape)}.")
    return array


def _pair_counts(first, second) -> tuple:
    """(area of first, area of second, area of their intersection) for two normalised masks."""
    if isinstance(first, dict) or isinstance(second, dict):
        first_rle = first if isinstance(first, dict) else _encode(first)
        second_rle = second if isinstance(second, dict) else _encode(second)
        intersection = mask_utils.area(mask_utils.merge([first_rle, second_rle], intersect=True))
        return int(mask_utils.area(first_rle)), int(mask_utils.area(second_rle)), int(intersection)
    return int(np.count_nonzero(first)), int(np.count_nonzero(second)), int(np.count_nonzero(first & second))


def _encode(mask: np.ndarray) -> dict:
    return to_coco_rle(encode_mask(mask))


def _batch_counts_numpy(first: np.ndarray, second: np.ndarray) -> tuple:
    """Vectorised per-item areas and intersections of two (N, H, W) bool batches."""
    count = first.shape[0]
    if not _HAS_BITWISE_COUNT:
        flat_first, flat_second = first.reshape(count, -1), second.reshape(count, -1)
        return (
            np.count_nonzero(flat_first, axis=1).astype(np.int64),
            np.count_nonzero(flat_second, axis=1).astype(np.int64),
            np.count_nonzero(flat_first & flat_second, axis=1).astype(np.int64),
        )
    # Eight pixels per byte: the AND and the popcount touch 1/8 of the memory of a bool array.
    packed_first = np.packbits(first.reshape(count, -1), axis=1)
    packed_second = np.packbits(second.reshape(count, -1), axis=1)
    return (
        np.bitwise_count(packed_first).sum(axis=1, dtype=np.int64),
        np.bitwise_count(packed_second).sum(axis=1, dtype=np.int64),
        np.bitwise_count(packed_first & packed_second).sum(axis=1, dtype=np.int64),
    )


def _batch_counts_torch(first, second) -> tuple:
    """Per-item areas and intersections of two (N, H, W) torch batches, counted on their device."""
    import torch

    first, second = first.bool().flatten(1), second.bool().flatten(1)
    stacked = torch.stack([first.sum(1), second.sum(1), (first & second).sum(1)])
    stacked = stacked.to("cpu", torch.int64).numpy()
    return stacked[0], stacked[1], stacked[2]


def _check_torch_bool(tensor, name: str):
    import torch

    if tensor.dtype == torch.bool:
        return
    if tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(
            f"{name} has dtype {tensor.dtype}; pass boolean masks (use `binarize(probabilities, threshold)`)."
        )
    if tensor.numel() and (int(tensor.min()) < 0 or int(tensor.max()) > 1):
        raise ValueError(f"{name} is an integer mask with values outside {{0, 1}}; pass a boolean mask.")


# ----------------------------------------------------------------------------------------------
# Accumulation


class MRESMetricAccumulator:
    """Streaming accumulator of MRES metrics; keeps per-expression scalars, never masks.

    Example:

    ```python
    >>> accumulator = MRESMetricAccumulator()
    >>> for batch in loader:
    ...     predictions = binarize(model(**batch).logits.sigmoid(), accumulator.options.threshold)
    ...     accumulator.update(predictions, batch["masks"], batch["granularities"], batch.get("parent_masks"))
    >>> results = accumulator.compute()
    >>> results["part"]["mIoU"], results["object+part"]["oIoU"]
    ```

    For distributed evaluation, gather every process's [`state_dict`] (e.g. with
    `accelerate.utils.gather_object`) and [`merge`] them, or rebuild with [`from_state_dict`].
    """

    def __init__(self, options: Optional[MRESMetricOptions] = None, **option_kwargs):
        if options is not None and option_kwargs:
            raise ValueError(f"Pass either `options` or option keywords, not both (got {sorted(option_kwargs)}).")
        if options is None:
            options = MRESMetricOptions.from_dict(option_kwargs)
        elif not isinstance(options, MRESMetricOptions):
            raise ValueError(f"`options` must be an MRESMetricOptions, got {type(options).__name__}.")
        self.options = options
        self.reset()

    def reset(self) -> None:
        """Forget every expression seen so far."""
        # Lists of per-update arrays, concatenated lazily: no quadratic growth.
        self._intersections: list = []
        self._unions: list = []
        self._granularities: list = []
        self._parent_ious: list = []

    def __len__(self) -> int:
        return int(sum(len(chunk) for chunk in self._intersections))

    # -- feeding ------------------------------------------------------------------------------

    def update(self, predictions, references, granularities, parent_masks=None) -> None:
        """Add one batch of expressions.

        Args:
            predictions, references:
                Boolean masks, one per expression: an (N, H, W) numpy array or torch tensor, or
                a list of 2-D arrays/tensors of any sizes, or a list of COCO RLE dicts. Item i
                of `predictions` is compared with item i of `references` at the same size.
            granularities (`list[str]`): `"object"` or `"part"` for each expression.
            parent_masks (*optional*): for each expression, the mask of the object a part
                belongs to (`None` for objects and for parts without one). Used for the
                part-object confusion figure only.
        """
        count = self._length(predictions, "predictions")
        for other, other_name in ((references, "references"), (granularities, "granularities")):
            if self._length(other, other_name) != count:
                raise ValueError(
                    f"`{other_name}` has {self._length(other, other_name)} items but `predictions` has {count}."
                )
        if isinstance(granularities, str):
            raise ValueError("`granularities` must be a list of 'object'/'part', got a single string.")
        codes = np.empty(count, dtype=np.int8)
        for index, granularity in enumerate(granularities):
            if granularity not in _GRANULARITY_CODE:
                raise ValueError(f"granularities[{index}] is {granularity!r}; expected one of {GRANULARITIES}.")
            codes[index] = _GRANULARITY_CODE[granularity]
        if parent_masks is not None:
            parent_count = self._length(parent_masks, "parent_masks")
            if parent_count != count:
                raise ValueError(f"`parent_masks` has {parent_count} items but `predictions` has {count}.")
            for index, parent in enumerate(parent_masks):
                if parent is not None and codes[index] != _GRANULARITY_CODE["part"]:
                    raise ValueError(
                        f"parent_masks[{index}] is given for an {granularities[index]!r} expression; "
                        "only part expressions have a parent object (use None)."
                    )
        if count == 0:
            return

        intersections, unions, prediction_items = self._main_counts(predictions, references, count)
        parent_ious = np.full(count, np.nan, dtype=np.float64)
        if parent_masks is not None:
            for index, parent in enumerate(parent_masks):
                if parent is None:
                    continue
                prediction = prediction_items[index] if prediction_items is not None else None
                if prediction is None:
                    prediction = _normalise_item(predictions[index], f"predictions[{index}]")
                parent = _normalise_item(parent, f"parent_masks[{index}]")
                if _mask_size(parent) != _mask_size(prediction):
                    raise ValueError(
                        f"parent_masks[{index}] has size {_mask_size(parent)} but predictions[{index}] has size "
                        f"{_mask_size(prediction)}."
                    )
                area_prediction, area_parent, intersection = _pair_counts(prediction, parent)
                parent_ious[index] = self._iou(
                    np.array([intersection]), np.array([area_prediction + area_parent - intersection])
                )[0]

        self._intersections.append(intersections)
        self._unions.append(unions)
        self._granularities.append(codes)
        self._parent_ious.append(parent_ious)

    @staticmethod
    def _length(items, name: str) -> int:
        if isinstance(items, Mapping):
            raise ValueError(f"`{name}` must be a batch (list, array or tensor), got a single dict.")
        try:
            return len(items)
        except TypeError:
            kind = type(items).__name__
            raise ValueError(f"`{name}` must be a batch (list, array or tensor), got {kind}.") from None

    def _main_counts(self, predictions, references, count: int) -> tuple:
        """Per-item intersection and union; also returns the normalised predictions when built."""
        batched_torch = _is_torch_tensor(predictions) and _is_torch_tensor(references)
        if batched_torch and predictions.dim() == 3 and references.dim() == 3:
            if tuple(predictions.shape) != tuple(references.shape):
                raise ValueError(
                    f"predictions have shape {tuple(predictions.shape)} but references have shape "
                    f"{tuple(references.shape)}."
                )
            _check_torch_bool(predictions, "predictions")
            _check_torch_bool(references, "references")
            if references.device != predictions.device:
                references = references.to(predictions.device)
            area_p, area_r, intersections = _batch_counts_torch(predictions, references)
            return intersections, area_p + area_r - intersections, None
        batched_numpy = isinstance(predictions, np.ndarray) or _is_torch_tensor(predictions)
        batched_numpy = batched_numpy and (isinstance(references, np.ndarray) or _is_torch_tensor(references))
        if batched_numpy:
            prediction_array = _as_bool_array(predictions, "predictions")
            reference_array = _as_bool_array(references, "references")
            if prediction_array.ndim == 3 and reference_array.ndim == 3:
                if prediction_array.shape != reference_array.shape:
                    raise ValueError(
                        f"predictions have shape {prediction_array.shape} but references have shape "
                        f"{reference_array.shape}."
                    )
                area_p, area_r, intersections = _batch_counts_numpy(prediction_array, reference_array)
                return intersections, area_p + area_r - intersections, list(prediction_array)
        # Ragged batch (lists, RLE, mixed): one vectorised count per expression.
        intersections = np.empty(count, dtype=np.int64)
        unions = np.empty(count, dtype=np.int64)
        prediction_items = []
        for index in range(count):
            prediction = _normalise_item(predictions[index], f"predictions[{index}]")
            reference = _normalise_item(references[index], f"references[{index}]")
            if _mask_size(prediction) != _mask_size(reference):
                raise ValueError(
                    f"predictions[{index}] has size {_mask_size(prediction)} but references[{index}] has size "
                    f"{_mask_size(reference)}; resize to the evaluation resolution first."
                )
            area_p, area_r, intersection = _pair_counts(prediction, reference)
            intersections[index] = intersection
            unions[index] = area_p + area_r - intersection
            prediction_items.append(prediction)
        return intersections, unions, prediction_items

    # -- results ------------------------------------------------------------------------------

    def _iou(self, intersections: np.ndarray, unions: np.ndarray) -> np.ndarray:
        empty_value = 1.0 if self.options.empty_gt == "one_if_both_empty" else 0.0
        safe_unions = np.where(unions > 0, unions, 1)
        return np.where(unions > 0, intersections / safe_unions, empty_value)

    def _arrays(self) -> tuple:
        if not self._intersections:
            empty = np.empty(0)
            return empty.astype(np.int64), empty.astype(np.int64), empty.astype(np.int8), empty
        return (
            np.concatenate(self._intersections),
            np.concatenate(self._unions),
            np.concatenate(self._granularities),
            np.concatenate(self._parent_ious),
        )

    def per_expression_iou(self) -> np.ndarray:
        """IoU of every expression, in the order they were added."""
        intersections, unions, _, _ = self._arrays()
        return self._iou(intersections, unions)

    def compute(self) -> dict:
        """The metric table: `{"object": {...}, "part": {...}, "object+part": {...}, "options": {...}}`.

        Each group holds `mIoU`, `oIoU` and `Prec@X` as percentages (0-100) and `count`, the
        number of expressions. `part` and `object+part` also hold `part_object_confusion`, the
        percentage of part expressions (among those with a parent mask, counted in
        `part_object_confusion_count`) whose prediction has a higher IoU with the parent object
        than with the part. A group without expressions has `None` values and count 0. When the
        union of a whole group is empty, `oIoU` follows the `empty_gt` rule.
        """
        intersections, unions, codes, parent_ious = self._arrays()
        ious = self._iou(intersections, unions)
        selections = {
            "object": codes == _GRANULARITY_CODE["object"],
            "part": codes == _GRANULARITY_CODE["part"],
            "object+part": np.ones(len(codes), dtype=bool),
        }
        results = {}
        for group, selected in selections.items():
            results[group] = self._group_metrics(
                ious[selected], intersections[selected], unions[selected], parent_ious[selected],
                with_confusion=group != "object",
            )
        results["options"] = self.options.to_dict()
        return results

    def _group_metrics(self, ious, intersections, unions, parent_ious, with_confusion: bool) -> dict:
        count = len(ious)
        metrics: dict = {"mIoU": None, "oIoU": None}
        metrics.update({self.options.prec_key(t): None for t in self.options.prec_thresholds})
        if count:
            metrics["mIoU"] = 100.0 * float(ious.mean())
            total_union = int(unions.sum())
            metrics["oIoU"] = 100.0 * float(self._iou(np.array([intersections.sum()]), np.array([total_union]))[0])
            for threshold in self.options.prec_thresholds:
                hits = ious >= threshold if self.options.prec_comparison == ">=" else ious > threshold
                metrics[self.options.prec_key(threshold)] = 100.0 * float(hits.mean())
        metrics["count"] = count
        if with_confusion:
            has_parent = ~np.isnan(parent_ious)
            confusion_count = int(has_parent.sum())
            confused = parent_ious[has_parent] > ious[has_parent]
            metrics["part_object_confusion"] = 100.0 * float(confused.mean()) if confusion_count else None
            metrics["part_object_confusion_count"] = confusion_count
        return metrics

    # -- distributed evaluation ---------------------------------------------------------------

    def state_dict(self) -> dict:
        """Picklable, gather-friendly state: the options and per-expression arrays."""
        intersections, unions, codes, parent_ious = self._arrays()
        return {
            "options": self.options.to_dict(),
            "intersection": intersections,
            "union": unions,
            "granularity": codes,
            "parent_iou": parent_ious,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "MRESMetricAccumulator":
        """Rebuild an accumulator from [`state_dict`]."""
        accumulator = cls(MRESMetricOptions.from_dict(state["options"]))
        arrays = [np.asarray(state[key]) for key in ("intersection", "union", "granularity", "parent_iou")]
        if len({len(array) for array in arrays}) != 1:
            raise ValueError(f"State arrays have different lengths: {[len(array) for array in arrays]}.")
        if len(arrays[0]):
            accumulator._intersections.append(arrays[0].astype(np.int64))
            accumulator._unions.append(arrays[1].astype(np.int64))
            accumulator._granularities.append(arrays[2].astype(np.int8))
            accumulator._parent_ious.append(arrays[3].astype(np.float64))
        return accumulator

    def merge(self, other: "MRESMetricAccumulator") -> "MRESMetricAccumulator":
        """Add every expression of `other` (e.g. another process's accumulator) to this one."""
        if not isinstance(other, MRESMetricAccumulator):
            raise ValueError(f"Can only merge an MRESMetricAccumulator, got {type(other).__name__}.")
        if other.options != self.options:
            raise ValueError(
                "Cannot merge accumulators with different options: "
                f"{self.options.to_dict()} vs {other.options.to_dict()}."
            )
        self._intersections.extend(other._intersections)
        self._unions.extend(other._unions)
        self._granularities.extend(other._granularities)
        self._parent_ious.extend(other._parent_ious)
        return self


def compute_mres_metrics(predictions, references, granularities, parent_masks=None, **options) -> dict:
    """One-call form of [`MRESMetricAccumulator`]: update once, compute.

    `options` are the fields of [`MRESMetricOptions`] (resolution, threshold, prec_thresholds,
    prec_comparison, empty_gt, input_size).
    """
    accumulator = MRESMetricAccumulator(MRESMetricOptions.from_dict(options))
    accumulator.update(predictions, references, granularities, parent_masks)
    return accumulator.compute()


# ----------------------------------------------------------------------------------------------
# Reporting


def format_metrics_table(
    results: Mapping, fmt: str = "markdown", include_options: bool = True, key_name: str = "split"
) -> str:
    """Render results of [`MRESMetricAccumulator.compute`] as a markdown table.

    `results` is one result dict, or a dict of them keyed by split name
    (`{"validation": results, "test_unseen": results}`), which adds a column titled `key_name`
    (e.g. "method" for `{"unires": results, "full_image": results}`).
    Missing values (groups without expressions) print as `-`.
    """
    if fmt != "markdown":
        raise ValueError(f"Unsupported table format {fmt!r}; supported: 'markdown'.")
    if _is_single_result(results):
        splits = {None: results}
    else:
        splits = dict(results)
        for split, split_results in splits.items():
            if not _is_single_result(split_results):
                raise ValueError(
                    f"results[{split!r}] is not a metrics result (expected keys {list(GROUPS)})."
                )
    if not splits:
        raise ValueError("`results` is empty.")
    first = next(iter(splits.values()))
    prec_keys = [key for key in first["object+part"] if key.startswith("Prec@")]
    header = [key_name] if None not in splits else []
    header += ["setting", "mIoU", "oIoU", *prec_keys, "part→object confusion", "count"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for split, split_results in splits.items():
        for group in GROUPS:
            metrics = split_results[group]
            cells = [str(split)] if split is not None else []
            cells.append(group)
            cells += [_format_value(metrics.get(key)) for key in ["mIoU", "oIoU", *prec_keys]]
            cells.append(_format_value(metrics.get("part_object_confusion")))
            cells.append(str(metrics.get("count", 0)))
            lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    if include_options:
        described = {
            split: ", ".join(f"{key}={value}" for key, value in split_results["options"].items() if value is not None)
            for split, split_results in splits.items()
            if split_results.get("options")
        }
        if len(set(described.values())) == 1:
            table += "\n\nMetric options: " + next(iter(described.values()))
        elif described:
            table += "\n\nMetric options: " + "; ".join(f"{split}: {text}" for split, text in described.items())
    return table


def _is_single_result(results) -> bool:
    return isinstance(results, Mapping) and all(group in results for group in GROUPS)


def _format_value(value) -> str:
    return "-" if value is None else f"{value:.2f}"
