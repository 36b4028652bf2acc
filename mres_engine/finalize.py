"""After every shard is complete: the exactly-once check, the merged stats and the dataset card.

:func:`finalize_run` ends a local run, runs as the Slurm job that waits for the shard array
(:class:`mres_engine.executors.FinalizeRun`), and starts ``python -m mres_engine publish``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional

from dataset_scripts.publish import publish_shards

from . import layout
from .stats import RunStats

RUN_OPTIONS_FILE = "run_options.json"  # written by mres_engine.run.record_run_options, read for the card


def merged_stats(out: str) -> RunStats:
    total = RunStats()
    for record in layout.completed_shards(out).values():
        total.merge(RunStats.from_dict(record["stats"]))
    return total


def check_exactly_once(out: str) -> dict[str, Any]:
    """Every manifest image is in exactly one place: a written row or an image-level reject.

    Reads only what complete shard records list. Returns counts and the offending ids
    (``missing``: in no place; ``duplicated``: in more than one; ``unexpected``: not in the manifest).
    """
    import pyarrow.parquet as pq

    info = layout.read_manifest_info(out)
    if info is None:
        raise FileNotFoundError(f"{out} holds no prepared manifest ({layout.MANIFEST_DIR}/{layout.MANIFEST_INFO})")
    expected: list[str] = []
    for rank in range(info["num_shards"]):
        expected += [r["image_id"] for r in layout.read_jsonl(layout.shard_manifest_path(out, rank, info["num_shards"]))]
    seen: dict[str, int] = {}
    written = rejected = 0
    shard_records = layout.completed_shards(out)
    for record in shard_records.values():
        for path in record["files"]:
            if path.startswith(layout.ANNOTATIONS_DIR + os.sep):
                for image_id in pq.read_table(os.path.join(out, path), columns=["image_id"]).column("image_id").to_pylist():
                    seen[image_id] = seen.get(image_id, 0) + 1
                    written += 1
        for entry in layout.read_jsonl(os.path.join(out, record["rejects"])):
            if entry.get("level") == "image" and entry["action"] == "skipped":
                seen[entry["image_id"]] = seen.get(entry["image_id"], 0) + 1
                rejected += 1
    expected_set = set(expected)
    return {
        "images": len(expected),
        "written": written,
        "rejected": rejected,
        "complete_shards": len(shard_records),
        "num_shards": info["num_shards"],
        "missing": sorted(expected_set - set(seen)),
        "duplicated": sorted(i for i, n in seen.items() if n > 1),
        "unexpected": sorted(set(seen) - expected_set),
    }


def finalize_run(out: str, card_data: Optional[dict] = None, write_card: bool = True) -> dict[str, Any]:
    """After every shard is complete: merge the stats into ``stats.json``, check exactly-once, write the card."""
    check = check_exactly_once(out)
    if check["complete_shards"] != check["num_shards"]:
        raise RuntimeError(
            f"{out}: {check['num_shards'] - check['complete_shards']} of {check['num_shards']} shards are not complete; "
            "rerun the same command to finish them"
        )
    if check["missing"] or check["duplicated"] or check["unexpected"]:
        raise RuntimeError(
            f"{out}: exactly-once check failed: {len(check['missing'])} missing, {len(check['duplicated'])} "
            f"duplicated, {len(check['unexpected'])} unexpected image ids (first: "
            f"{(check['missing'] + check['duplicated'] + check['unexpected'])[:5]})"
        )
    stats = merged_stats(out)
    summary = {**stats.to_dict(), "exactly_once": {k: v for k, v in check.items() if not isinstance(v, list)}}
    layout.write_json_atomic(os.path.join(out, layout.STATS_FILE), summary)
    if write_card:
        publish_shards(out, card_data=engine_card_data(out, stats, card_data))
    return summary


def engine_card_data(out: str, stats: RunStats, card_data: Optional[dict] = None) -> dict[str, Any]:
    """Card fields for an engine output: a description, and the per-stage table as notes."""
    info = layout.read_manifest_info(out) or {}
    data = {
        "pretty_name": "MRES engine output",
        "description": (
            "Multi-granularity referring expression segmentation data made by the UniRES data engine "
            "(`python -m mres_engine run`): object masks from Segment Anything prompted with detection "
            "boxes, part masks from an LLM part vocabulary and an open-vocabulary detector, captions from the "
            "dense captioner, filtered by CLIPScore. Every model score is kept in `scores`. "
            "Config `default` embeds the images; config `annotations` holds the same rows without image bytes "
            "(`file_name` instead)."
        ),
        "notes": "Per-stage accounting of the run (`stats.json`; rejected items with reasons in `rejects/`):\n\n```\n"
        + stats.table()
        + "\n```\n\n"
        + (f"Input: {info.get('num_images', '?')} images, {info.get('num_boxes', '?')} boxes; {info.get('input_summary', '')}\n" if info else "")
        + _options_notes(out),
    }
    data.update(card_data or {})
    return data


def _options_notes(out: str) -> str:
    path = os.path.join(out, RUN_OPTIONS_FILE)
    if not os.path.exists(path):
        return ""
    record = layout.read_json(path)
    lines = ["", "Stages, in order: " + ", ".join(f"`{name}`" for name in record["stage_names"]) + "."]
    lines += [f"- `{name}`: {text}" for name, text in record["definitions"].items()]
    if record.get("stages"):
        lines += ["", "Stage options of the run (`run_options.json`):", "", "```json",
                  json.dumps(record["stages"], indent=1, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"
