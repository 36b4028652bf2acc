"""Everything a from-scratch run needs when no checkpoint can be downloaded.

Offline (the demo, the tests) there is no CLIP vocabulary to fetch, so a CLIP-compatible
tokenizer is trained on the training sentences, and a config is sized to it. Both are
saved, so that `--config_name` / `--processor_name_or_path` can point at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from dataset_scripts.features import sentences_of
from modeling_unires import UniRESConfig, UniRESImageProcessor, UniRESProcessor, build_clip_tokenizer


def prepare_from_scratch(
    sentences: Iterable[str],
    folder,
    *,
    config_kwargs: dict,
    vocab_size: int = 1200,
) -> tuple[UniRESConfig, UniRESProcessor]:
    """Train a tokenizer on `sentences`, size a `UniRESConfig` to it, save both under `folder`.

    Returns the config and the processor; they are also saved to `folder/config` and
    `folder/processor`, where `--config_name` / `--processor_name_or_path` can find them.
    `config_kwargs` are `UniRESConfig` arguments; the image processor takes its size from
    `vision_config["image_size"]` and its threshold from the config.
    """
    folder = Path(folder)
    config = UniRESConfig(**config_kwargs)
    tokenizer = build_clip_tokenizer(sentences, vocab_size=vocab_size, model_max_length=config.text_max_length)
    config.fit_to_tokenizer(tokenizer)
    image_processor = UniRESImageProcessor(size=config.image_size, mask_threshold=config.mask_threshold)
    processor = UniRESProcessor(image_processor, tokenizer)
    config.save_pretrained(folder / "config")
    processor.save_pretrained(folder / "processor")
    return config, processor


def override_config_kwargs(config_kwargs: dict, overrides: dict) -> dict:
    """`config_kwargs` with `overrides` applied: top-level keys replace, `vision_config` / `text_config` dicts merge.

    >>> override_config_kwargs({"vision_config": {"hidden_size": 128, "patch_size": 8}}, {"vision_config": {"patch_size": 6}})
    {'vision_config': {'hidden_size': 128, 'patch_size': 6}}
    """
    merged = dict(config_kwargs)
    for key, value in overrides.items():
        if key in ("vision_config", "text_config"):
            if not isinstance(value, dict):
                raise ValueError(f"override of {key} must be a dict of {key} fields, got {value!r}")
            merged[key] = {**merged.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def all_sentences(rows) -> list[str]:
    """Every usable sentence of every referent of MRES rows (reads only the referents column when it can)."""
    if hasattr(rows, "select_columns"):
        rows = rows.select_columns(["referents"])
    return [s for row in rows for referent in row["referents"] for s in sentences_of(referent)]
