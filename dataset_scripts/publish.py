"""Write a DatasetDict in the Hugging Face Hub layout, and push it when given a repo id (checked first).

Layout (what ``DatasetDict.push_to_hub`` makes, so ``load_dataset(folder_or_repo)`` needs no code
of ours)::

    README.md                         dataset card: YAML `configs`, `dataset_info`, counts, licence, citation
    data/{split}-00000-of-0000N.parquet
    annotations/annotations-{split}-...parquet   (publish_shards, optional) the rows without image bytes
    figures/score_*.png                          (publish_shards) score histograms shown in the card

``publish`` writes a ``DatasetDict``; ``publish_shards`` writes the card of a folder whose shards
exist already (the data engine's output) and pushes it.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import re
import tempfile
from typing import Any, Mapping, Optional, Sequence, Union

from datasets import Dataset, DatasetDict, Features, Value
from datasets.table import embed_table_storage
from datasets.utils.py_utils import convert_file_size_to_int
from tqdm.auto import tqdm

from .dataset_card import render_dataset_card
from run_support.hub import check_push_access, push_folder

logger = logging.getLogger(__name__)


def split_counts(dataset: Dataset) -> dict[str, int]:
    """Images, object/part referents and sentences in a split of MRES rows (reads only the referents column)."""
    counts = {"images": len(dataset), "referents": 0, "objects": 0, "parts": 0, "sentences": 0}
    if "referents" not in dataset.column_names:
        return counts
    for batch in dataset.select_columns(["referents"]).iter(batch_size=1000):
        for referents in batch["referents"]:
            for ref in referents or []:
                counts["referents"] += 1
                counts["objects" if ref["granularity"] == "object" else "parts"] += 1
                counts["sentences"] += len(ref["sentences"] or [])
    return counts


def write_parquet_shards(
    dataset: Dataset, folder: str, split: str, max_shard_size: Union[int, str] = "256MB", data_dir: str = "data"
) -> int:
    """Write ``dataset`` as ``{folder}/{data_dir}/{split}-XXXXX-of-YYYYY.parquet`` shards of bounded size.

    Image files referenced by path are embedded as bytes. Returns the number of shards.
    """
    max_bytes = convert_file_size_to_int(max_shard_size)
    num_shards = max(1, math.ceil(dataset._estimate_nbytes() / max_bytes)) if len(dataset) else 1
    num_shards = min(num_shards, max(1, len(dataset)))
    out_dir = os.path.join(folder, data_dir)
    os.makedirs(out_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(out_dir, f"{split}-*.parquet")):
        os.remove(stale)  # a previous publish with another shard count must not leave extra files
    for index in tqdm(range(num_shards), desc=f"Writing {split} shards", disable=num_shards < 2):
        shard = dataset.shard(num_shards=num_shards, index=index, contiguous=True)
        shard = shard.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True)
        path = os.path.join(out_dir, f"{split}-{index:05d}-of-{num_shards:05d}.parquet")
        tmp = path + ".tmp"
        shard.with_format(None).to_parquet(tmp)
        os.replace(tmp, path)  # a crash never leaves a truncated shard under the final name
    return num_shards


def publish(
    dataset_dict: Union[DatasetDict, Mapping[str, Dataset]],
    output_dir: Optional[str] = None,
    *,
    repo_id: Optional[str] = None,
    max_shard_size: Union[int, str] = "256MB",
    card_data: Optional[Mapping[str, Any]] = None,
    private: bool = False,
    token: Optional[str] = None,
    config_name: str = "default",
) -> str:
    """Write ``dataset_dict`` in the Hub layout into ``output_dir``; push it to ``repo_id`` when one is given.

    Args:
        dataset_dict: split name → ``Dataset`` (rows of the MRES schema, or any features).
        output_dir: the local folder to write; ``None`` (only with ``repo_id``) writes into a temporary folder
            that is removed after the push. A path is never taken for a repo id, nor the other way round.
        repo_id: a Hub dataset repo ``"org/name"`` to push to; its access is checked before anything is written.
        max_shard_size: upper bound of one Parquet shard's uncompressed size.
        card_data: dataset card fields: ``pretty_name``, ``license``, ``citation``,
            ``description``, ``homepage``, ``usage``, ``notes``, plus other YAML keys.
        private, token: for the Hub repo.
        config_name: name of the ``configs`` entry in the card.

    Returns:
        The folder written, or the repo URL after a push.
    """
    if not isinstance(dataset_dict, Mapping) or not dataset_dict:
        raise ValueError("publish expects a non-empty DatasetDict (split name -> Dataset)")
    for split, ds in dataset_dict.items():
        if not isinstance(ds, Dataset):
            raise TypeError(f"split {split!r} is a {type(ds).__name__}; publish writes map-style Datasets only")
    if output_dir is None and repo_id is None:
        raise ValueError("publish needs an output_dir to write, a repo_id to push to, or both")
    if repo_id is not None:
        repo_id = check_push_access(repo_id, output_dir, token=token, private=private, repo_type="dataset",
                                    option="--hub_dataset_id")
    with tempfile.TemporaryDirectory(prefix="mres-publish-") as staging:
        folder = os.path.expanduser(os.fspath(output_dir)) if output_dir is not None else staging
        write_dataset_folder(dataset_dict, folder, max_shard_size=max_shard_size, card_data=card_data,
                             config_name=config_name)
        if repo_id is None:
            return folder
        # replace this config's old shards, whose count may differ from the new ones
        return push_folder(folder, repo_id, token=token, repo_type="dataset",
                           commit_message="Upload MRES dataset (Parquet shards + dataset card)",
                           delete_patterns=[f"data/{split}-*.parquet" for split in dataset_dict])


def write_dataset_folder(dataset_dict, folder: str, *, max_shard_size="256MB", card_data=None,
                         config_name: str = "default") -> None:
    """The Hub layout on disk: ``data/{split}-NNNNN-of-NNNNN.parquet`` shards and the ``README.md`` card."""
    os.makedirs(folder, exist_ok=True)
    counts = {}
    features = next(iter(dataset_dict.values())).features
    for split, ds in dataset_dict.items():
        if ds.features != features:
            raise ValueError(f"split {split!r} has features that differ from the other splits")
        shards = write_parquet_shards(ds, folder, split, max_shard_size=max_shard_size)
        counts[split] = {**split_counts(ds), "shards": shards}
        logger.info("%s: %d rows in %d shard(s)", split, len(ds), shards)
    card = render_dataset_card(counts, features, config_name=config_name, card_data=card_data)
    with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
        f.write(card)


# -- folders whose Parquet shards already exist (the data engine writes them shard by shard) ----------

ANNOTATIONS_CONFIG = "annotations"
_SHARD_NAME = re.compile(r"^(?P<split>.+?)-\d{5}-of-\d{5}(?:-\d+)?\.parquet$")


def annotation_features(features: Features) -> Features:
    """The features of the ``annotations`` config: the rows without image bytes, with ``file_name`` instead."""
    columns = {}
    for name, feature in features.items():
        if name == "image":
            continue
        columns[name] = feature
        if name == "image_id":
            columns["file_name"] = Value("string")
    columns.setdefault("file_name", Value("string"))
    return Features(columns)


def _split_files(folder: str, data_dir: str, prefix: str = "") -> dict[str, list[str]]:
    files: dict[str, list[str]] = {}
    for path in sorted(glob.glob(os.path.join(folder, data_dir, f"{prefix}*.parquet"))):
        match = _SHARD_NAME.match(os.path.basename(path)[len(prefix):])
        if match:
            files.setdefault(match["split"], []).append(path)
    return files


def publish_shards(
    folder: str,
    repo_id: Optional[str] = None,
    *,
    data_dir: str = "data",
    annotations_dir: str = ANNOTATIONS_CONFIG,
    card_data: Optional[Mapping[str, Any]] = None,
    private: bool = False,
    token: Optional[str] = None,
    extra_uploads: Sequence[str] = ("stats.json", "rejects/[!.]*.jsonl"),
) -> str:
    """Write the card of a folder whose Parquet shards exist already; push it when ``repo_id`` is given.

    The folder holds ``{data_dir}/{split}-NNNNN-of-NNNNN[-PPP].parquet`` (images embedded, config
    ``default``) and optionally ``{annotations_dir}/annotations-{split}-...parquet`` (no image
    bytes, ``file_name`` instead; config ``annotations``). The card gets both configs, counts per
    split, granularity and category, and a histogram per score (``figures/score_*.png``), all
    read from the shards one column at a time (the annotations when present: no image is read).

    Returns:
        The folder, or the repo URL after a push.
    """
    import pyarrow.parquet as pq

    from .dataset_card import ReferentStatistics

    if repo_id is not None:  # before the card's statistics read every shard
        repo_id = check_push_access(repo_id, folder, token=token, private=private, repo_type="dataset",
                                    option="--repo_id")
    data_files = _split_files(folder, data_dir)
    if not data_files:
        raise ValueError(f"{folder} has no Parquet shards named {data_dir}/<split>-NNNNN-of-NNNNN*.parquet")
    annotation_files = _split_files(folder, annotations_dir, prefix="annotations-")
    features = Features.from_arrow_schema(pq.read_schema(next(iter(data_files.values()))[0]))
    extra_configs = {}
    if annotation_files:
        if set(annotation_files) != set(data_files):
            raise ValueError(f"{folder}: splits {sorted(annotation_files)} in {annotations_dir}/ but {sorted(data_files)} in {data_dir}/")
        annotation_schema = Features.from_arrow_schema(pq.read_schema(next(iter(annotation_files.values()))[0]))
        extra_configs[ANNOTATIONS_CONFIG] = (f"{annotations_dir}/annotations-{{split}}-*", annotation_schema)

    counts = {}
    statistics = ReferentStatistics()
    for split, paths in data_files.items():
        split_statistics = ReferentStatistics(max_samples=0)
        for path in annotation_files.get(split, paths):
            split_statistics.add_parquet(path)
            statistics.add_parquet(path)
        counts[split] = {**split_statistics.counts(), "shards": len(paths)}
    figures = statistics.write_histograms(folder)
    sections = [statistics.category_section()]
    if figures:
        sections.append("## Scores\n\nHistograms over every split (a seeded sample of at most 200,000 values per score).\n\n"
                        + "\n\n".join(f"![{name}]({path})" for name, path in figures.items()))
    card = render_dataset_card(counts, features, card_data=card_data, extra_configs=extra_configs, extra_sections=sections)
    tmp = os.path.join(folder, ".tmp-README.md")  # a reader never sees half a card
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(card)
    os.replace(tmp, os.path.join(folder, "README.md"))
    if repo_id is None:
        return folder
    # `[!.]*`: a file a crashed writer left under its temporary name (`.tmp-train-...`) is never uploaded.
    allow = ["README.md", f"{data_dir}/[!.]*.parquet", f"{annotations_dir}/[!.]*.parquet", "figures/[!.]*.png",
             *extra_uploads]
    delete = [f"{data_dir}/*.parquet", f"{annotations_dir}/*.parquet", "figures/*.png"]
    return push_folder(folder, repo_id, token=token, repo_type="dataset", allow_patterns=allow, delete_patterns=delete,
                       commit_message="Upload MRES dataset (Parquet shards + dataset card)")
