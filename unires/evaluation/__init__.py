"""Evaluation of referring segmentation at object and part granularity (MRES metrics).

The metrics are offered as functions (`compute_mres_metrics`), as a streaming accumulator for
evaluation loops (`MRESMetricAccumulator`), and as an `evaluate` module:
`evaluate.load(MRES_IOU_METRIC_PATH)`.
"""

import os

from .metrics import (
    MRESMetricAccumulator,
    MRESMetricOptions,
    binarize,
    compute_mres_metrics,
    format_metrics_table,
)
from .evaluator import (
    BASELINES,
    UniRESRowSegmenter,
    evaluate_checkpoint,
    evaluate_methods,
    evaluate_predictor,
    full_image_baseline,
    largest_object_box_baseline,
)


MRES_IOU_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mres_iou")
"""Local folder of the `evaluate` module: `evaluate.load(MRES_IOU_METRIC_PATH)`."""

__all__ = [
    "BASELINES",
    "UniRESRowSegmenter",
    "evaluate_checkpoint",
    "evaluate_methods",
    "evaluate_predictor",
    "full_image_baseline",
    "largest_object_box_baseline",
    "MRES_IOU_METRIC_PATH",
    "MRESMetricAccumulator",
    "MRESMetricOptions",
    "binarize",
    "compute_mres_metrics",
    "format_metrics_table",
]
