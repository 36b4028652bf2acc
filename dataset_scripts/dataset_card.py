"""The README.md dataset card written beside the Parquet shards (YAML header + Markdown body)."""

from __future__ import annotations

from typing import Any, Mapping

from datasets import DatasetInfo
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCardData

from .features import GRANULARITIES, SCHEMA_VERSION, describe_schema

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
    extra_configs: Mapping[str, tuple[str, Any]] | None = None,
    extra_sections: list[str] | None = None,
) -> str:
    """Return the README.md text.

    Args:
        split_counts: ``{split: {"images": n, "referents": n, "objects": n, "parts": n, "sentences": n, "shards": n}}``.
        features: the datasets ``Features`` of the rows (written to ``dataset_info``).
        config_name: the ``configs`` entry name.
        data_dir: folder holding ``{split}-XXXXX-of-YYYYY.parquet`` shards.
        card_data: ``pretty_name``, ``license``, ``citation`` (BibTeX), ``description``,
            ``homepage``, ``usage``, ``notes``, plus any other YAML key (``tags``, ``language`` ...).
        extra_configs: more ``configs`` entries: ``{name: (file pattern with "{split}", features)}``,
            e.g. ``{"annotations": ("annotations/annotations-{split}-*", features)}``.
        extra_sections: Markdown sections placed after the counts (e.g. category counts, figures).
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
    configs = {config_name: (f"{data_dir}/{{split}}-*", features), **dict(extra_configs or {})}
    MetadataConfigs(
        {
            name: {"data_files": [{"split": s, "path": pattern.format(split=s)} for s in split_counts]}
            for name, (pattern, _) in configs.items()
        }
    ).to_dataset_card_data(yaml)
    DatasetInfosDict(
        {name: DatasetInfo(features=config_features) for name, (_, config_features) in configs.items()}
    ).to_dataset_card_data(yaml)

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
        *[line for section in extra_sections or [] for line in (section, "")],
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


# -- statistics of Parquet shards, for cards of data too large to hold in memory ----------------------


class ReferentStatistics:
    """Counts per granularity and category, and a bounded sample of every score, over MRES rows.

    Scores are kept by reservoir sampling (at most ``max_samples`` per score, seeded), so the
    histograms of 32M referents need a few MB.
    """

    def __init__(self, max_samples: int = 200_000, seed: int = 0):
        import random
        from collections import Counter

        self.images = 0
        self.sentences = 0
        self.categories = {g: Counter() for g in GRANULARITIES}
        self.scores: dict[str, list[float]] = {}
        self._seen: dict[str, int] = {}
        self._max = max_samples
        self._random = random.Random(seed)

    def add_rows(self, referent_lists) -> None:
        for referents in referent_lists:
            self.images += 1
            for ref in referents or []:
                granularity = ref["granularity"] if ref["granularity"] in self.categories else "object"
                self.categories[granularity][ref["category"]] += 1
                self.sentences += len(ref["sentences"] or [])
                for name, value in (ref.get("scores") or {}).items():
                    if value is not None:
                        self._sample(name, float(value))

    def _sample(self, name: str, value: float) -> None:
        seen = self._seen[name] = self._seen.get(name, 0) + 1
        sample = self.scores.setdefault(name, [])
        if len(sample) < self._max:
            sample.append(value)
        else:
            slot = self._random.randrange(seen)
            if slot < self._max:
                sample[slot] = value

    def add_parquet(self, path: str, batch_size: int = 1000) -> None:
        """Read only the ``referents`` column of one Parquet file, batch by batch."""
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(columns=["referents"], batch_size=batch_size):
            self.add_rows(batch.column(0).to_pylist())

    def counts(self) -> dict[str, int]:
        objects, parts = (sum(self.categories[g].values()) for g in GRANULARITIES)
        return {"images": self.images, "referents": objects + parts, "objects": objects, "parts": parts,
                "sentences": self.sentences}

    def category_section(self, top: int = 100) -> str:
        """Markdown: the ``top`` most frequent categories per granularity, with the number of categories in all."""
        lines = ["## Categories", ""]
        for granularity, counter in self.categories.items():
            if not counter:
                continue
            total = sum(counter.values())
            shown = counter.most_common(top)
            lines += [
                f"{len(counter):,} {granularity} categories, {total:,} {granularity} referents"
                + (f"; the {top} most frequent:" if len(counter) > top else ":"),
                "",
                f"| {granularity} category | referents |",
                "|---|---|",
                *[f"| {name} | {n:,} |" for name, n in shown],
                "",
            ]
        return "\n".join(lines).rstrip()

    def write_histograms(self, folder: str, subdir: str = "figures") -> dict[str, str]:
        """One PNG per score under ``folder/subdir``; returns ``{score: relative path}``."""
        import os

        paths = {}
        os.makedirs(os.path.join(folder, subdir), exist_ok=True)
        for name, values in sorted(self.scores.items()):
            relative = f"{subdir}/score_{name}.png"
            draw_histogram(values, f"{name} ({self._seen[name]:,} referents)", os.path.join(folder, relative))
            paths[name] = relative
        return paths


def draw_histogram(values, title: str, path: str, bins: int = 40, size: tuple[int, int] = (480, 300)) -> None:
    """A bar chart of ``values`` in ``bins`` equal bins, written as PNG (PIL only: no plotting dependency)."""
    import numpy as np
    from PIL import Image, ImageDraw

    values = np.asarray(values, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    width, height = size
    left, right, top, bottom = 48, 12, 28, 36
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), title, fill="black")
    draw.line([(left, top), (left, height - bottom), (width - right, height - bottom)], fill="black")
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(int(counts.max()), 1)
    bar_w = plot_w / bins
    for i, count in enumerate(counts):
        bar_h = plot_h * count / peak
        x0 = left + i * bar_w
        draw.rectangle([x0 + 1, height - bottom - bar_h, x0 + bar_w - 1, height - bottom], fill=(70, 110, 180))
    draw.text((4, top - 4), str(peak), fill="black")
    draw.text((left, height - bottom + 6), f"{edges[0]:.3g}", fill="black")
    draw.text((width - right - 40, height - bottom + 6), f"{edges[-1]:.3g}", fill="black")
    draw.text((left + plot_w // 2 - 30, height - bottom + 18), f"{values.size:,} sampled", fill="black")
    image.save(path, format="PNG")
