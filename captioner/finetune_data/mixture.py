"""Build each source with its builder and mix them with per-source weights."""
from __future__ import annotations

import logging

import datasets

from .coco_captions import CocoCaptionsForCaptioner
from .parts import PacoPartsForCaptioner, PartImageNetForCaptioner
from .visual_genome import VisualGenomeRegionsForCaptioner

logger = logging.getLogger(__name__)

#: Source name → builder class. Names are what ``--data_dirs``/``--mixture_weights`` use.
CAPTION_SOURCES = {
    "coco_captions": CocoCaptionsForCaptioner,
    "visual_genome": VisualGenomeRegionsForCaptioner,
    "paco": PacoPartsForCaptioner,
    "partimagenet": PartImageNetForCaptioner,
}


def parse_mapping(text: str | dict | None, value_type=str) -> dict:
    """``"a=1,b=2"`` → ``{"a": value_type("1"), ...}`` (dicts pass through)."""
    if not text:
        return {}
    if isinstance(text, dict):
        return {key: value_type(value) for key, value in text.items()}
    mapping = {}
    for pair in text.split(","):
        if "=" not in pair:
            raise ValueError(f"Expected name=value in {text!r}, got {pair!r}.")
        key, value = pair.split("=", 1)
        mapping[key.strip()] = value_type(value.strip())
    return mapping


def load_caption_source(name: str, data_dir: str, split: str = "train", cache_dir: str | None = None, rejects_path: str | None = None) -> datasets.Dataset:
    """Prepare one source (``CAPTION_SOURCES[name]``) from the release under ``data_dir``."""
    if name not in CAPTION_SOURCES:
        raise ValueError(f"Unknown caption source {name!r}; expected one of {sorted(CAPTION_SOURCES)}.")
    builder = CAPTION_SOURCES[name](data_dir=data_dir, cache_dir=cache_dir, rejects_path=rejects_path)
    builder.download_and_prepare()
    if split not in builder.info.splits:
        raise ValueError(f"Source {name!r} under {data_dir!r} has no split {split!r}; it has {sorted(builder.info.splits)}.")
    return builder.as_dataset(split=split)


def build_caption_mixture(
    data_dirs: dict[str, str],
    weights: dict[str, float] | None = None,
    split: str = "train",
    seed: int = 0,
    max_examples_per_source: int | None = None,
    cache_dir: str | None = None,
    rejects_path: str | None = None,
    stopping_strategy: str = "first_exhausted",
) -> datasets.Dataset:
    """Mix the given sources into one dataset (one epoch), drawing each example from a source with
    probability proportional to its weight (default 1 each).

    Args:
        data_dirs: source name → the folder its release was downloaded to.
        weights: source name → sampling weight (must be > 0; unknown names are refused).
        stopping_strategy: where the epoch ends. ``"first_exhausted"`` (default): when the first
            source runs out, so no example repeats within an epoch. ``"all_exhausted"``: when every
            source has been seen once, revisiting the smaller ones (with the README's weights PACO
            would repeat about 13.7 times in a 13.6M-example epoch).
    """
    if stopping_strategy not in ("first_exhausted", "all_exhausted"):
        raise ValueError(f"stopping_strategy must be 'first_exhausted' or 'all_exhausted', got {stopping_strategy!r}.")
    if not data_dirs:
        raise ValueError("build_caption_mixture needs at least one source in data_dirs.")
    weights = dict(weights or {})
    for name in weights:
        if name not in data_dirs:
            raise ValueError(f"Weight given for source {name!r} that has no data_dir (sources: {sorted(data_dirs)}).")
    parts, probabilities = [], []
    for name, data_dir in data_dirs.items():
        weight = float(weights.get(name, 1.0))
        if not weight > 0:
            raise ValueError(f"Mixture weight of {name!r} must be > 0, got {weight}.")
        dataset = load_caption_source(name, data_dir, split=split, cache_dir=cache_dir, rejects_path=rejects_path)
        if max_examples_per_source is not None:
            dataset = dataset.shuffle(seed=seed).select(range(min(max_examples_per_source, len(dataset))))
        if len(dataset) == 0:
            logger.warning("caption source %r under %r has no usable example; left out of the mixture", name, data_dir)
            continue
        logger.info("caption source %s: %d examples, weight %.3g", name, len(dataset), weight)
        parts.append(dataset)
        probabilities.append(weight)
    if not parts:
        raise ValueError(f"No usable example in any caption source {sorted(data_dirs)}.")
    if len(parts) == 1:
        return parts[0]
    total = sum(probabilities)
    return datasets.interleave_datasets(
        parts, probabilities=[p / total for p in probabilities], seed=seed, stopping_strategy=stopping_strategy
    )
