"""Evaluation of referring segmentation at object and part granularity (MRES metrics).

One front door, `harness`: every model, the trivial baselines included, is a [`Segmenter`] (`segmenters`: UniRES,
CLIPSeg, SAM 3, pipelines, plain callables, `full_image`, `largest_object_box`; listed once in `registry`), scored by
`run_evaluation` (model and dataset by name, the dataset's identity and every convention in the result),
`evaluate_segmenter` (a segmenter on rows) or `accumulate_metrics` (the loop itself, a share of the images per
process, for training loops).

The metrics are offered as functions (`compute_mres_metrics`), as a streaming accumulator for
evaluation loops (`MRESMetricAccumulator`), and as an `evaluate` module:
`evaluate.load(MRES_IOU_METRIC_PATH)`.

Names are imported on first use, so that a command line can read `registry` (its `--model_type` choices) before
torch loads.
"""

import importlib
import os

MRES_IOU_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mres_iou")
"""Local folder of the `evaluate` module: `evaluate.load(MRES_IOU_METRIC_PATH)`."""

_EXPORTS = {
    "metrics": ("MRESMetricAccumulator", "MRESMetricOptions", "binarize", "compute_mres_metrics",
                "format_metrics_table"),
    "harness": ("NothingEvaluatedError", "accumulate_metrics", "compare_table", "evaluate_segmenter",
                "evaluate_segmenters", "markdown_report", "run_evaluation"),
    "registry": ("ADAPTERS", "BASELINES", "MODEL_TYPES"),
    "segmenters": ("CallableSegmenter", "CLIPSegSegmenter", "FullImageSegmenter", "LargestObjectBoxSegmenter",
                   "PipelineSegmenter", "Sam3Segmenter", "Segmenter", "UniRESSegmenter", "load_segmenter"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["MRES_IOU_METRIC_PATH", *_MODULE_OF]


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted(set(globals()) | set(_MODULE_OF))
