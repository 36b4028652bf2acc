"""Measure an engine output against ground truth in the shared schema, before spending a cluster on it.

Run the engine on images that have human masks (PACO, RefCOCO_m, or MRES-Synth offline), then::

    python -m mres_engine evaluate --prediction OUT --ground_truth GT --split train

Per image and granularity, ground-truth and predicted masks are paired greedily by decreasing
mask IoU (each mask used once; COCO's evaluation pairs greedily too). Reported per granularity:

- ``matched_iou``: mean over ground-truth referents of the IoU of its paired prediction (0 when
  none); 1.0 only when every ground-truth mask is reproduced exactly;
- ``recall`` / ``precision`` at ``--iou_threshold`` (0.5): ground-truth referents with a
  prediction at that IoU, and predictions with a ground truth at that IoU; ``recall`` of
  ``part`` is the part recall;
- ``keep_rate`` per stage (images and referents kept / given), read from the output's
  ``stats.json`` when the prediction is an engine output.

Images of the ground truth missing from the prediction count as predicted empty (rejected
images lower recall); prediction images absent from the ground truth are counted and ignored.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import pyarrow.parquet as pq
from pycocotools import mask as mask_utils

from dataset_scripts.features import GRANULARITIES
from dataset_scripts.load import load_mres_dataset
from dataset_scripts.masks import to_coco_rle


@dataclass
class EvaluateOptions:
    """What to compare."""

    prediction: str = field(metadata={"help": "Engine output folder, or any MRES-schema dataset (folder or Hub id)."})
    ground_truth: str = field(metadata={"help": "Ground truth in the MRES schema (folder or Hub id), e.g. MRES-Synth or RefCOCO_m."})
    split: str = field(default="train", metadata={"help": "Split of the prediction."})
    ground_truth_split: Optional[str] = field(default=None, metadata={"help": "Split of the ground truth (default: --split)."})
    iou_threshold: float = field(default=0.5, metadata={"help": "IoU at which a pair counts for recall and precision."})
    output_json: Optional[str] = field(default=None, metadata={"help": "Also write the report to this JSON file."})


def _local_shards(folder: str, split: str) -> list[str]:
    # An engine output (or a publish_shards folder) has image-free annotation shards: read those.
    annotations = sorted(glob.glob(os.path.join(glob.escape(folder), "annotations", f"annotations-{split}-*.parquet")))
    if annotations:
        return annotations
    return sorted(glob.glob(os.path.join(glob.escape(folder), "**", f"{split}-*.parquet"), recursive=True))


def iter_referents(name: str, split: str) -> Iterator[tuple[str, list[dict]]]:
    """``(image_id, referents)`` of every row of a folder or Hub dataset, reading no image bytes where it can."""
    if os.path.isdir(name):
        files = _local_shards(name, split)
        if not files:
            raise ValueError(f"{name} holds no Parquet shards of split {split!r}")
        for path in files:
            for batch in pq.ParquetFile(path).iter_batches(columns=["image_id", "referents"], batch_size=500):
                yield from zip(batch.column(0).to_pylist(), batch.column(1).to_pylist())
        return
    dataset = load_mres_dataset([name], split, streaming=True).select_columns(["image_id", "referents"])
    for row in dataset:
        yield row["image_id"], row["referents"]


def _pair(gt: list[dict], pred: list[dict], image_id: str) -> list[float]:
    """IoU of each ground-truth referent with its greedily paired prediction (0 when unpaired)."""
    if not gt:
        return []
    if not pred:
        return [0.0] * len(gt)
    gt_rles = [to_coco_rle(r["mask"], f"ground truth {r['referent_id']}") for r in gt]
    pred_rles = [to_coco_rle(r["mask"], f"prediction {r['referent_id']}") for r in pred]
    if any(list(p["size"]) != list(gt_rles[0]["size"]) for p in pred_rles + gt_rles):
        raise ValueError(f"image {image_id}: prediction and ground-truth masks differ in size")
    ious = mask_utils.iou(pred_rles, gt_rles, [0] * len(gt_rles))  # (num_pred, num_gt)
    pairs = sorted(((ious[p, g], p, g) for p in range(len(pred)) for g in range(len(gt))), reverse=True)
    best = [0.0] * len(gt)
    used_pred, used_gt = set(), set()
    for iou, p, g in pairs:
        if iou <= 0:
            break
        if p in used_pred or g in used_gt:
            continue
        used_pred.add(p)
        used_gt.add(g)
        best[g] = float(iou)
    return best


def evaluate_engine_output(
    prediction: str,
    ground_truth: str,
    split: str = "train",
    ground_truth_split: Optional[str] = None,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """The report described in the module docstring, as a dict."""
    predicted = dict(iter_referents(prediction, split))
    totals = {g: {"ground_truth": 0, "predicted": 0, "iou_sum": 0.0, "recalled": 0} for g in GRANULARITIES}
    images = missing = 0
    seen = set()
    for image_id, gt_referents in iter_referents(ground_truth, ground_truth_split or split):
        images += 1
        seen.add(image_id)
        pred_referents = predicted.get(image_id)
        if pred_referents is None:
            missing += 1
            pred_referents = []
        for granularity in GRANULARITIES:
            gt = [r for r in gt_referents or [] if r["granularity"] == granularity]
            pred = [r for r in pred_referents or [] if r["granularity"] == granularity]
            best = _pair(gt, pred, image_id)
            total = totals[granularity]
            total["ground_truth"] += len(gt)
            total["predicted"] += len(pred)
            total["iou_sum"] += sum(best)
            total["recalled"] += sum(iou >= iou_threshold for iou in best)
    report: dict[str, Any] = {
        "prediction": prediction,
        "ground_truth": ground_truth,
        "iou_threshold": iou_threshold,
        "images": images,
        "images_missing_from_prediction": missing,
        "prediction_images_not_in_ground_truth": len(set(predicted) - seen),
        "granularities": {},
    }
    for granularity, t in totals.items():
        report["granularities"][granularity] = {
            "ground_truth": t["ground_truth"],
            "predicted": t["predicted"],
            "matched_iou": t["iou_sum"] / t["ground_truth"] if t["ground_truth"] else None,
            "recall": t["recalled"] / t["ground_truth"] if t["ground_truth"] else None,
            # pairs are one-to-one: the predictions at the threshold are the recalled ground truths
            "precision": t["recalled"] / t["predicted"] if t["predicted"] else None,
        }
    report["part_recall"] = report["granularities"]["part"]["recall"]
    report["keep_rate"] = keep_rates(prediction)
    return report


def keep_rates(output: str) -> dict[str, dict[str, Optional[float]]]:
    """Images and referents kept / given per stage, from an engine output's ``stats.json`` ({} otherwise)."""
    path = os.path.join(output, "stats.json")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        stages = json.load(f)["stages"]
    return {
        s["name"]: {
            "images": s["images_kept"] / s["images_in"] if s["images_in"] else None,
            "referents": s["referents_kept"] / s["referents_in"] if s["referents_in"] else None,
        }
        for s in stages
    }


def format_report(report: dict[str, Any]) -> str:
    def pct(value):
        return "-" if value is None else f"{value:.4f}"

    lines = [
        f"{report['images']} ground-truth images, {report['images_missing_from_prediction']} missing from the prediction",
        f"{'granularity':<12} {'gt':>8} {'pred':>8} {'matched IoU':>12} {'recall':>8} {'precision':>10}",
    ]
    for granularity, g in report["granularities"].items():
        lines.append(
            f"{granularity:<12} {g['ground_truth']:>8} {g['predicted']:>8} {pct(g['matched_iou']):>12} "
            f"{pct(g['recall']):>8} {pct(g['precision']):>10}"
        )
    for stage, rate in report["keep_rate"].items():
        lines.append(f"keep rate {stage}: images {pct(rate['images'])}, referents {pct(rate['referents'])}")
    return "\n".join(lines)


def main_evaluate(options: EvaluateOptions) -> dict[str, Any]:
    report = evaluate_engine_output(
        options.prediction, options.ground_truth, options.split, options.ground_truth_split, options.iou_threshold
    )
    print(format_report(report))
    if options.output_json:
        with open(options.output_json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    return report
