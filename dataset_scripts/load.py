"""Read MRES-schema datasets: Hub ids, folders written by `publish` (the writer is `publish.py`), and folders of one's
own data (`metadata.jsonl` or COCO `annotations.json`, see `own_data`), built on the fly.

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
    cache_dir: Optional[str] = None,
):
    """Load one or several MRES-schema datasets and mix them.

    Each name is a Hub id, a folder written by `publish` (its Parquet shards are read), or a folder of one's own
    data (`metadata.jsonl` or COCO `annotations.json`, at its top for the split "train", or one subfolder per
    split): that one is built by `own_data.OwnData`, every row checked, into the datasets cache (`cache_dir`,
    default the datasets cache), read again on every call; a bad row raises its `RowError` (file, line, key).

    Several datasets are interleaved with probabilities proportional to `weights`
    ("all_exhausted": every source is seen in full, the smaller ones repeat).
    """
    from .own_data import is_own_data_folder, load_own_data

    if not names:
        raise ValueError("no dataset given: pass at least one --dataset (Hub id or folder)")
    if weights is not None and len(weights) != len(names):
        raise ValueError(f"{len(weights)} dataset weights for {len(names)} datasets {list(names)}")
    if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"dataset weights must be non-negative and not all zero, got {list(weights)}")
    parts = []
    for name in names:
        local_files = sorted(glob.glob(os.path.join(glob.escape(str(name)), "**", f"{split}-*.parquet"), recursive=True))
        if not local_files and is_own_data_folder(name):
            # its errors name the folder's splits, or the file, line and key of a bad row
            parts.append(load_own_data(str(name), split, streaming=streaming, cache_dir=cache_dir))
            continue
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
