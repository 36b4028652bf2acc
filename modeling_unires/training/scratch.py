"""Everything a from-scratch run needs when no checkpoint can be downloaded.

Offline (the demo, the tests) there is no CLIP vocabulary to fetch, so a CLIP-compatible
tokenizer is trained on the training sentences, and a config is sized to it. Both are
saved, so that `--config_name` / `--processor_name_or_path` can point at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from ..configuration_unires import UniRESConfig
from ..image_processing_unires import UniRESImageProcessor
from ..processing_unires import UniRESProcessor
from ..tokenization_local import build_clip_tokenizer


def prepare_from_scratch(
    sentences: Iterable[str],
    folder,
    *,
    config_kwargs: dict,
    vocab_size: int = 1200,
) -> tuple[Path, Path]:
    """Train a tokenizer on `sentences`, size a `UniRESConfig` to it, save both.

    Returns (config folder, processor folder). `config_kwargs` are `UniRESConfig` arguments;
    the image processor takes its size from `vision_config["image_size"]`.
    """
    folder = Path(folder)
    config = UniRESConfig(**config_kwargs)
    tokenizer = build_clip_tokenizer(sentences, vocab_size=vocab_size, model_max_length=config.text_max_length)
    config.fit_to_tokenizer(tokenizer)
    processor = UniRESProcessor(UniRESImageProcessor(size=config.image_size), tokenizer)
    config.save_pretrained(folder / "config")
    processor.save_pretrained(folder / "processor")
    return folder / "config", folder / "processor"


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


def sentences_of(rows) -> list[str]:
    """Every sentence of every referent of MRES rows (reads only the referents column when it can)."""
    if hasattr(rows, "select_columns"):
        rows = rows.select_columns(["referents"])
    return [s for row in rows for referent in row["referents"] for s in referent["sentences"] if s and s.strip()]
