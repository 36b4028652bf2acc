"""Evaluate a mask predictor on an MRES-schema split: every sentence on its own.

A predictor maps image rows and, per row, a list of expressions to boolean masks. The
evaluator walks the split in batches of images, asks the predictor for every sentence of
every referent, and feeds the masks to `MRESMetricAccumulator` (streaming: no mask is
kept). UniRES and the trivial baselines go through the same code, so their numbers compare.

Resolution is the one choice the evaluator itself makes: "original" compares at each
image's own size (CRIS, the paper); "input" compares at the model's square input size
(LAVT), the ground truth resized there with nearest-neighbour sampling.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import islice
from typing import Iterable, Optional, Protocol, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from dataset_scripts.features import sentences_of
from dataset_scripts.load import load_mres_dataset
from dataset_scripts.masks import decode_mask

from .metrics import MRESMetricAccumulator, MRESMetricOptions
from .segmenters.base import resize_mask
from .segmenters.unires import UniRESSegmenter


class MaskPredictor(Protocol):
    def __call__(self, rows: Sequence[dict], texts: Sequence[Sequence[str]], size_of) -> list[list[np.ndarray]]:
        """Boolean masks, one per text of each row, of the size `size_of(row)` gives (height, width)."""


def full_image_baseline(rows, texts, size_of):
    """Trivial baseline: every expression gets the whole image."""
    return [[np.ones(size_of(row), dtype=bool) for _ in row_texts] for row, row_texts in zip(rows, texts)]


def largest_object_box_baseline(rows, texts, size_of):
    """Trivial baseline: every expression gets the filled box of the image's largest object."""
    out = []
    for row, row_texts in zip(rows, texts):
        objects = [r for r in row["referents"] if r["granularity"] == "object"] or list(row["referents"])
        mask = np.zeros((row["height"], row["width"]), dtype=bool)
        if objects:
            x, y, w, h = max(objects, key=lambda r: r["bbox"][2] * r["bbox"][3])["bbox"]
            mask[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = True
        out.append([resize_mask(mask, size_of(row)) for _ in row_texts])
    return out


BASELINES = {"full_image": full_image_baseline, "largest_object_box": largest_object_box_baseline}


def _queries(row: dict, granularity: Optional[str]):
    """(text, true mask RLE, granularity, parent mask RLE) for every sentence of every referent."""
    by_id = {r["referent_id"]: r for r in row["referents"]}
    for referent in row["referents"]:
        if granularity is not None and referent["granularity"] != granularity:
            continue
        parent = by_id.get(referent.get("parent_id")) if referent["granularity"] == "part" else None
        for sentence in sentences_of(referent):
            yield sentence, referent["mask"], referent["granularity"], parent["mask"] if parent else None


def evaluate_predictor(
    predictor: MaskPredictor,
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
    """Run `predictor` over MRES image rows and accumulate the metrics.

    With several processes, each takes every `num_processes`-th image starting at
    `process_index`; merge the returned accumulators (`MRESMetricAccumulator.merge`).
    """
    options = options or MRESMetricOptions()
    if options.resolution == "input":
        if options.input_size is None:
            if not input_size:
                raise ValueError("resolution='input' needs the model's input_size")
            # Recorded in the results: a number at "input" resolution means nothing without the size.
            options = replace(options, input_size=(input_size, input_size))
        elif input_size and tuple(options.input_size) != (input_size, input_size):
            raise ValueError(f"input_size={input_size} disagrees with options.input_size={options.input_size}")

    def size_of(row):
        return tuple(options.input_size) if options.resolution == "input" else (row["height"], row["width"])

    accumulator = MRESMetricAccumulator(options)
    rows = islice(rows, max_images) if max_images is not None else rows
    total = max_images
    if total is None and hasattr(rows, "__len__"):
        total = len(rows)
    bar = tqdm(total=total, desc="evaluating", unit="img", disable=not progress)
    batch: list[dict] = []

    def flush():
        queries = [list(_queries(row, granularity)) for row in batch]
        predictions = predictor(batch, [[q[0] for q in qs] for qs in queries], size_of)
        preds, refs, grans, parents = [], [], [], []
        for row, qs, row_preds in zip(batch, queries, predictions):
            for (_, rle, gran, parent_rle), pred in zip(qs, row_preds):
                preds.append(pred)
                refs.append(resize_mask(decode_mask(rle), size_of(row)))
                grans.append(gran)
                parents.append(None if parent_rle is None else resize_mask(decode_mask(parent_rle), size_of(row)))
        if preds:
            accumulator.update(preds, refs, grans, parent_masks=parents)
        bar.update(len(batch))
        batch.clear()

    for index, row in enumerate(rows):
        if index % num_processes != process_index:
            continue
        batch.append(row)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    bar.close()
    return accumulator


def evaluate_methods(
    model,
    processor,
    rows,
    *,
    options: Optional[MRESMetricOptions] = None,
    baselines: Sequence[str] = (),
    batch_size: int = 16,
    max_images: Optional[int] = None,
    progress: bool = True,
) -> dict:
    """{method: metrics} for UniRES and each named trivial baseline, on the same rows."""
    unknown = [name for name in baselines if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(BASELINES)}")
    options = options or MRESMetricOptions(threshold=model.config.mask_threshold)
    predictors = {"unires": UniRESSegmenter(model, processor, threshold=options.threshold)}
    predictors.update({name: BASELINES[name] for name in baselines})
    return {
        name: evaluate_predictor(
            predictor,
            rows,
            options=options,
            input_size=model.config.image_size,
            batch_size=batch_size,
            max_images=max_images,
            progress=progress,
        ).compute()
        for name, predictor in predictors.items()
    }


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
    """Load a checkpoint and a dataset (folder or Hub id) and return {split: {method: metrics}}."""
    from transformers import AutoModel, AutoProcessor

    from dataset_scripts.sources import check_local_or_hub

    model_name_or_path = check_local_or_hub(model_name_or_path, kind="model")  # a mistyped folder: a missing path
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModel.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code).to(device).eval()
    processor = AutoProcessor.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    options = MRESMetricOptions(
        resolution=resolution,
        threshold=model.config.mask_threshold if threshold is None else threshold,
        prec_comparison=prec_comparison,
    )
    results = {}
    for split in splits:
        rows = load_mres_dataset([dataset], split)
        results[split] = evaluate_methods(
            model, processor, rows, options=options, baselines=baselines, batch_size=batch_size, max_images=max_images
        )
    return results
