"""Evaluation of referring segmentation at object and part granularity (MRES metrics).

Any model is scored through the segmenter interface (`segmenters`: UniRES, CLIPSeg, SAM 3, pipelines, plain
callables) by `run_evaluation` / `evaluate_segmenter` (`harness`), which write the dataset's identity and every
convention into the result.

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
    evaluate_checkpoint,
    evaluate_methods,
    evaluate_predictor,
    full_image_baseline,
    largest_object_box_baseline,
)
from .harness import (
    NothingEvaluatedError,
    compare_table,
    evaluate_segmenter,
    markdown_report,
    run_evaluation,
)
from .segmenters import (
    CallableSegmenter,
    CLIPSegSegmenter,
    PipelineSegmenter,
    Sam3Segmenter,
    Segmenter,
    UniRESSegmenter,
    load_segmenter,
)


MRES_IOU_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mres_iou")
"""Local folder of the `evaluate` module: `evaluate.load(MRES_IOU_METRIC_PATH)`."""

__all__ = [
    "BASELINES",
    "CLIPSegSegmenter",
    "CallableSegmenter",
    "NothingEvaluatedError",
    "PipelineSegmenter",
    "Sam3Segmenter",
    "Segmenter",
    "UniRESSegmenter",
    "compare_table",
    "evaluate_segmenter",
    "load_segmenter",
    "markdown_report",
    "run_evaluation",
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
