"""Overlay PNGs of a model's predictions on a handful of object and part queries."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..rle import decode_rle
from ..visualization import draw_prediction_panel
from .evaluator import UniRESPredictor


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def pick_queries(rows, num: int) -> list[tuple[dict, dict, str]]:
    """About half object and half part queries, (row, referent, first sentence), in dataset order."""
    wanted = {"object": (num + 1) // 2, "part": num // 2}
    picked = []
    for row in rows:
        for referent in row["referents"]:
            granularity = referent["granularity"]
            if wanted.get(granularity, 0) > 0 and referent["sentences"]:
                picked.append((row, referent, referent["sentences"][0]))
                wanted[granularity] -= 1
                break  # one query per image keeps the panels varied
        if not any(wanted.values()):
            break
    return picked


def write_overlays(model, processor, rows, folder, num: int = 8) -> list[Path]:
    """Predict `num` queries and save one panel each (image | prediction | truth) under `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    predictor = UniRESPredictor(model, processor)
    written = []
    for index, (row, referent, sentence) in enumerate(pick_queries(rows, num)):
        predicted = predictor([row], [[sentence]], lambda r: (r["height"], r["width"]))[0][0]
        truth = decode_rle(referent["mask"])
        union = np.logical_or(predicted, truth).sum()
        iou = float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
        panel = draw_prediction_panel(row["image"], sentence, predicted, truth, iou=iou)
        path = folder / f"{index:02d}-{referent['granularity']}-{_slug(sentence)}.png"
        panel.save(path)
        written.append(path)
    return written
