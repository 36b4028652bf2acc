"""After every shard is complete: the exactly-once check, the merged stats and the dataset card.

:func:`finalize_run` ends a local run, runs as the Slurm job that waits for the shard array
(:class:`mres_engine.executors.FinalizeRun`), and starts ``python -m mres_engine publish``.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Optional

import pyarrow.parquet as pq

from dataset_scripts.dataset_card import render_dataset_card
from dataset_scripts.features import MRES_FEATURES
from dataset_scripts.publish import ANNOTATIONS_CONFIG, annotation_features, publish_shards

from . import layout
from .stats import RunStats

RUN_OPTIONS_FILE = "run_options.json"  # written by mres_engine.run.record_run_options, read for the card
RUN_KEY = "run"  # manifest/manifest.json's record of what defines the output (mres_engine.run.run_identity)


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
    """After every shard is complete: merge the stats into ``stats.json``, check exactly-once, write the card.

    A run that wrote no row (every image rejected) ends the same way, with a card that says 0 rows.
    """
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
        data = engine_card_data(out, stats, card_data)
        if check["written"]:
            publish_shards(out, card_data=data)
        else:
            info = layout.read_manifest_info(out) or {}
            data["notes"] = ("**This run wrote 0 rows**: every image was rejected (reasons in `rejects/`, counts below), so the "
                             "folder holds no Parquet shard and `load_dataset` finds no data file.\n\n" + data["notes"])
            _write_card(out, info.get("split") or (info.get(RUN_KEY) or {}).get("split") or "train", data)
    return summary


def _write_card(out: str, split: str, card_data: dict[str, Any]) -> None:
    """A card for a folder with no row yet (an unfinished run) or none at all (every image rejected): 0 rows,
    and the two configs with the features the shards will have, so that readers learn the schema."""
    zero = {"images": 0, "referents": 0, "objects": 0, "parts": 0, "sentences": 0, "shards": 0}
    card = render_dataset_card({split: zero}, MRES_FEATURES, card_data=portable_card_data(out, card_data),
                               extra_configs={ANNOTATIONS_CONFIG: (f"{layout.ANNOTATIONS_DIR}/annotations-{{split}}-*",
                                                                   annotation_features(MRES_FEATURES))})
    with layout.atomic_text(os.path.join(out, "README.md")) as f:
        f.write(card)


def write_unfinished_card(out: str, split: str) -> bool:
    """At the start of a run, when the folder has no card: one that says the run is unfinished.

    Its configs name the shard files, so ``load_dataset(out)`` reads complete shards only and, before
    the first one, says that no data file is found, instead of reading the manifest's JSON lines
    as data (a ``CastError``). The finished run's card replaces it. Returns whether it was written.
    """
    if os.path.exists(os.path.join(out, "README.md")):
        return False
    _write_card(out, split, {
        "pretty_name": UNFINISHED_NAME,
        "description": ("An unfinished run of the UniRES data engine (`python -m mres_engine run`). Shards appear in "
                        "`data/` as they complete; the run's last step replaces this card with the counts, the per-stage "
                        "accounting and the stage options. Rerun the same command to resume a stopped run."),
    })
    return True


UNFINISHED_NAME = "MRES engine output (unfinished)"
REFUSED_NAME = "MRES engine output (refused)"


def is_placeholder_card(out: str) -> bool:
    """Whether ``out/README.md`` is a card this engine writes before a run has data (unfinished or refused)."""
    path = os.path.join(out, "README.md")
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return f"\n# {UNFINISHED_NAME}\n" in text or f"\n# {REFUSED_NAME}\n" in text


def write_refused_card(out: str, split: str, reason: str, values: Iterable[Any] = ()) -> None:
    """The card of a folder whose run was refused for its input before it started: why, and that nothing resumes.

    ``values``: the run's paths as given (e.g. the annotation file), named in the card by their own name only.
    """
    replacements = local_strings(out, values)
    _write_card(out, split, {
        "pretty_name": REFUSED_NAME,
        "description": ("No data: `python -m mres_engine run` refused this folder's input before it started, so "
                        f"nothing was built and there is nothing to resume. The reason: {_replace_all(reason, replacements)}. "
                        "Fix the input and run the command again."),
    })


# -- no local path in the card ----------------------------------------------------------------------------------

_HUB_CACHE = re.compile(r"(?:^|/)(models|datasets)--([^/]+?)--([^/]+)/snapshots/[^/]+")
_LOCAL_HOSTS = ("localhost", "127.", "0.0.0.0", "[::1]", "::1", "10.", "192.168.")


def _looks_local(value: str) -> bool:
    if value.startswith(("/", "~", "./", "../", ".\\")) or re.match(r"^[A-Za-z]:[\\/]", value):
        return True
    return ("/" in value or os.sep in value or "." in value) and os.path.exists(value)


def portable_name(value: Any) -> Any:
    """A model, file or endpoint as the card may name it: a Hub id as is; a local folder or file by its own name
    with the word "local" (``sam (local folder)``), a Hub cache snapshot by its Hub id; a URL on this machine or
    its network as ``local endpoint``. Anything else unchanged."""
    if not isinstance(value, str) or not value:
        return value
    if re.match(r"^[a-z][a-z0-9+.-]*://", value):
        host = re.sub(r"^[a-z][a-z0-9+.-]*://(?:[^@/]*@)?", "", value).split("/")[0]
        return "local endpoint" if host.startswith(_LOCAL_HOSTS) or host.split(":")[0] in ("localhost",) else value
    if not _looks_local(value):
        return value
    cached = _HUB_CACHE.search(value.replace(os.sep, "/"))
    if cached:
        return f"{cached.group(2)}/{cached.group(3)}"
    path = os.path.expanduser(value).rstrip("/\\")
    name = os.path.basename(path) or path
    kind = "folder" if os.path.isdir(path) else "file" if os.path.isfile(path) or os.path.splitext(name)[1] else "path"
    return f"{name} (local {kind})"


def local_strings(out: str, values: Iterable[Any] = ()) -> dict[str, str]:
    """``{local string: what the card says instead}``: every path-like value of the run's options (as given and
    absolute), the input files, the output folder; longest first, so that a path is replaced before its folder."""
    found: dict[str, str] = {}
    candidates = list(values)
    options = os.path.join(out, RUN_OPTIONS_FILE)
    if os.path.exists(options):
        record = layout.read_json(options)
        candidates += list((record.get("stages") or {}).values()) + list((record.get("runner") or {}).values())
    info = layout.read_manifest_info(out) or {}
    identity = info.get(RUN_KEY) or {}
    candidates += [info.get("annotations"), info.get("image_dir"), (identity.get("annotations") or {}).get("path"),
                   identity.get("image_dir")]
    for value in candidates:
        if not isinstance(value, str) or not value:
            continue
        portable = portable_name(value)
        if portable == value or len(value) < 4 or not ("/" in value or os.sep in value):
            continue  # a bare name ("model.pth", ".") is no machine's path, and replacing it would maim the text
        found[value] = portable
        if not re.match(r"^[a-z][a-z0-9+.-]*://", value):
            for variant in (os.path.abspath(os.path.expanduser(value)), os.path.realpath(os.path.expanduser(value))):
                if len(variant) > 1:
                    found.setdefault(variant, portable)
    for variant in (os.path.abspath(out), os.path.realpath(out)):
        found.setdefault(variant, "the output folder")
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


def _replace_all(text: str, replacements: dict[str, str]) -> str:
    for local, portable in replacements.items():
        text = text.replace(local, portable)
    return text


def portable_card_data(out: str, card_data: dict[str, Any], values: Iterable[Any] = ()) -> dict[str, Any]:
    """``card_data`` with every local string (:func:`local_strings`) replaced in its text, nested values included.

    Applied to what a card is rendered from, before it is written: a card written with a local path and scrubbed
    afterwards would keep the path if the run were killed in between.
    """
    replacements = local_strings(out, values)

    def portable(value: Any) -> Any:
        if isinstance(value, str):
            return _replace_all(value, replacements)
        if isinstance(value, dict):
            return {key: portable(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(portable(item) for item in value)
        return value

    return portable(card_data)


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
        + _input_notes(info)
        + _options_notes(out),
    }
    data.update(card_data or {})
    return portable_card_data(out, data)


def _input_notes(info: dict[str, Any]) -> str:
    identity = info.get(RUN_KEY) or {}
    lines = []
    annotations = identity.get("annotations")
    if annotations and annotations.get("sha256"):
        lines.append(f"Annotations: `{portable_name(annotations['path'])}`, {annotations['size']} bytes, "
                     f"SHA-256 `{annotations['sha256']}`.")
    elif identity.get("hub_dataset"):
        hub = identity["hub_dataset"]
        lines.append(f"Input: the `{hub['split']}` split of `{portable_name(hub['name'])}`.")
    if identity.get("split") is not None:
        lines.append(f"Split `{identity['split']}`, source `{identity.get('source')}`, {identity.get('num_shards')} shards.")
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def _options_notes(out: str) -> str:
    path = os.path.join(out, RUN_OPTIONS_FILE)
    if not os.path.exists(path):
        return ""
    record = layout.read_json(path)
    replacements = local_strings(out)
    lines = ["", "Stages, in order: " + ", ".join(f"`{name}`" for name in record["stage_names"]) + "."]
    lines += [f"- `{name}`: {_replace_all(text, replacements)}" for name, text in record["definitions"].items()]
    if record.get("stages"):
        stages = {key: portable_name(value) for key, value in record["stages"].items()}
        lines += ["", "Stage options of the run (`run_options.json`; local folders and endpoints by name only):", "", "```json",
                  json.dumps(stages, indent=1, sort_keys=True), "```"]
    return "\n".join(lines) + "\n"
