"""The README.md dataset card written beside the Parquet shards (YAML header + Markdown body)."""

from __future__ import annotations

from typing import Any, Mapping

from datasets import DatasetInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from .features import SCHEMA_VERSION, describe_schema

# Keys of `card_data` that publish() understands; anything else goes into the YAML header as is.
CARD_TEXT_KEYS = ("pretty_name", "description", "citation", "homepage", "usage", "notes")


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "10M<n<100M"


def render_dataset_card(
    split_counts: Mapping[str, Mapping[str, int]],
    features,
    *,
    config_name: str = "default",
    data_dir: str = "data",
    card_data: Mapping[str, Any] | None = None,
) -> str:
    """Return the README.md text.

    Args:
        split_counts: ``{split: {"images": n, "referents": n, "objects": n, "parts": n, "sentences": n, "shards": n}}``.
        features: the datasets ``Features`` of the rows (written to ``dataset_info``).
        config_name: the ``configs`` entry name.
        data_dir: folder holding ``{split}-XXXXX-of-YYYYY.parquet`` shards.
        card_data: ``pretty_name``, ``license``, ``citation`` (BibTeX), ``description``,
            ``homepage``, ``usage``, ``notes``, plus any other YAML key (``tags``, ``language`` ...).
    """
    card_data = dict(card_data or {})
    text = {key: card_data.pop(key, None) for key in CARD_TEXT_KEYS}
    pretty_name = text["pretty_name"] or "MRES dataset"
    total_images = sum(c["images"] for c in split_counts.values())

    yaml = DatasetCardData(
        pretty_name=pretty_name,
        license=card_data.pop("license", "other"),
        task_categories=card_data.pop("task_categories", ["image-segmentation"]),
        size_categories=[_size_category(total_images)],
        tags=card_data.pop("tags", ["referring-expression-segmentation", "mres"]),
        **card_data,
    )
    yaml["schema_version"] = SCHEMA_VERSION
    # The same two YAML blocks datasets.push_to_hub writes: the data files of each split, and
    # the features so that load_dataset restores Image() and the nested referent structs.
    MetadataConfigs(
        {config_name: {"data_files": [{"split": s, "path": f"{data_dir}/{s}-*"} for s in split_counts]}}
    ).to_dataset_card_data(yaml)
    DatasetInfosDict({config_name: DatasetInfo(features=features)}).to_dataset_card_data(yaml)

    rows = "\n".join(
        f"| {s} | {c['images']:,} | {c['objects']:,} | {c['parts']:,} | {c['sentences']:,} | {c['shards']} |"
        for s, c in split_counts.items()
    )
    body = [
        f"# {pretty_name}",
        "",
        text["description"] or "A multi-granularity referring expression segmentation (MRES) dataset.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_dataset",
        'ds = load_dataset("<this repo or folder>", streaming=True)',
        "```",
        "Rows hold one image and all its referents; `dataset_scripts.flatten.flatten_referents`"
        " turns them into one (image, sentence, mask) sample per expression.",
        "",
        "## Counts",
        "",
        "| split | images | object referents | part referents | sentences | shards |",
        "|---|---|---|---|---|---|",
        rows,
        "",
        "## Schema",
        "",
        describe_schema(),
    ]
    if text["usage"]:
        body += ["## Usage", "", text["usage"], ""]
    if text["notes"]:
        body += ["## Notes", "", text["notes"], ""]
    body += ["## Licence", "", f"`{yaml.license}`" + (f"; see {text['homepage']}" if text["homepage"] else ""), ""]
    body += ["## Citation", "", "```bibtex", (text["citation"] or "").strip() or "(none given)", "```", ""]
    return f"---\n{yaml.to_yaml()}\n---\n\n" + "\n".join(body)
