"""Deprecated entry points, kept so that callers written before the harness became the one front door still run.

Use `unires.evaluation.harness` instead (each shim below says what to call): `accumulate_metrics` /
`evaluate_segmenter` with a [`Segmenter`] (the trivial baselines are segmenters too: `load_segmenter("full_image")`),
and `run_evaluation` for a checkpoint and a dataset. Each shim warns once (`FutureWarning`) and delegates.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Optional, Sequence

from .harness import accumulate_metrics, run_evaluation
from .metrics import MRESMetricAccumulator, MRESMetricOptions
from .segmenters.base import Segmenter, resize_mask  # noqa: F401  (resize_mask: its old home)


def _deprecated(name: str, instead: str) -> None:
    warnings.warn(f"unires.evaluation.evaluator.{name} is deprecated: use {instead}", FutureWarning, stacklevel=3)


class _RowsPredictor(Segmenter):
    """An old `MaskPredictor` (`predictor(rows, texts, size_of) -> masks`) seen as a segmenter."""

    model_type = "predictor"

    def __init__(self, predictor, input_size: Optional[int]):
        self.predictor = predictor
        self.input_size = input_size

    def masks_of_rows(self, rows, expressions, sizes):
        size_by_row = {id(row): tuple(size) for row, size in zip(rows, sizes)}
        return self.predictor(rows, expressions, lambda row: size_by_row[id(row)])


def evaluate_predictor(
    predictor,
    rows: Iterable[dict],
    *,
    options: Optional[MRESMetricOptions] = None,
    input_size: Optional[int] = None,
    batch_size: int = 8,
    max_images: Optional[int] = None,
    granularity: Optional[str] = None,
    process_index: int = 0,
    num_processes: int = 1,
    progress: bool = True,
) -> MRESMetricAccumulator:
    """Deprecated: `harness.accumulate_metrics(segmenter, rows, ...)` (the segmenter states its input size)."""
    _deprecated("evaluate_predictor", "unires.evaluation.harness.accumulate_metrics(segmenter, rows, options=..., "
                                      "batch_size=..., max_images=..., process_index=..., num_processes=...)")
    if not isinstance(predictor, Segmenter) or (input_size and input_size != predictor.input_size):
        predictor = _RowsPredictor(predictor, input_size or getattr(predictor, "input_size", None))
    return accumulate_metrics(predictor, rows, options=options, batch_size=batch_size, max_images=max_images,
                              granularity=granularity, process_index=process_index, num_processes=num_processes,
                              progress=progress)


def evaluate_checkpoint(
    model_name_or_path: str,
    dataset: str,
    *,
    splits: Sequence[str] = ("validation",),
    resolution: str = "original",
    threshold: Optional[float] = None,
    prec_comparison: str = ">=",
    baselines: Sequence[str] = (),
    batch_size: int = 16,
    max_images: Optional[int] = None,
    device: Optional[str] = None,
    trust_remote_code: bool = False,
) -> dict:
    """Deprecated: `harness.run_evaluation(model, "unires", dataset, splits, ...)`.

    Returns {split: {method: metrics}}."""
    from dataset_scripts.sources import check_local_or_hub

    _deprecated("evaluate_checkpoint", 'unires.evaluation.run_evaluation(model, "unires", dataset, splits, ...)')
    check_local_or_hub(model_name_or_path, kind="model")  # a mistyped folder: a missing path, before the data
    result = run_evaluation(model_name_or_path, "unires", dataset, list(splits), resolution=resolution,
                            threshold=threshold, prec_comparison=prec_comparison, baselines=baselines,
                            batch_size=batch_size, max_images=max_images, device=device,
                            trust_remote_code=trust_remote_code or None)
    return {split: {"unires": entry["metrics"], **entry["baselines"]} for split, entry in result["splits"].items()}
