"""Read MRES-schema datasets: Hub ids or folders written by `publish` (the writer is `publish.py`).

Several datasets can be mixed by weight; streaming and map-style alike.
"""

from __future__ import annotations

import glob
import os
from typing import Optional, Sequence

from datasets import interleave_datasets, load_dataset

from run_support.sources import check_local_or_hub


def load_mres_dataset(
    names: Sequence[str],
    split: str,
    *,
    streaming: bool = False,
    weights: Optional[Sequence[float]] = None,
    seed: int = 0,
):
    """Load one or several MRES-schema datasets (Hub ids or `publish`ed folders) and mix them.

    Several datasets are interleaved with probabilities proportional to `weights`
    ("all_exhausted": every source is seen in full, the smaller ones repeat).
    """
    if not names:
        raise ValueError("no dataset given: pass at least one --dataset (Hub id or folder)")
    if weights is not None and len(weights) != len(names):
        raise ValueError(f"{len(weights)} dataset weights for {len(names)} datasets {list(names)}")
    if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"dataset weights must be non-negative and not all zero, got {list(weights)}")
    parts = []
    for name in names:
        local_files = sorted(glob.glob(os.path.join(glob.escape(str(name)), "**", f"{split}-*.parquet"), recursive=True))
        try:
            if local_files:
                # A folder written by `publish`: read its Parquet shards directly. Loading the folder
                # itself would cache it under the folder's name and config only (datasets 5), so two
                # folders of the same name would share one stale cache.
                parts.append(load_dataset("parquet", data_files={split: local_files}, split=split, streaming=streaming))
            else:
                parts.append(load_dataset(check_local_or_hub(name, kind="dataset"), split=split, streaming=streaming))
        except ValueError as error:
            raise ValueError(f"dataset {name!r} has no split {split!r}: {error}") from error
    if len(parts) == 1:
        return parts[0]
    probabilities = None if weights is None else [w / sum(weights) for w in weights]
    return interleave_datasets(
        parts, probabilities=probabilities, seed=seed, stopping_strategy="all_exhausted"
    )
