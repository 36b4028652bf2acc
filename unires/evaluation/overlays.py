"""Overlay pictures of predictions: one mask tinted on its image, panels of image | prediction | truth, and
PNGs of a model's predictions on a handful of object and part queries."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dataset_scripts.features import sentences_of
from dataset_scripts.masks import decode_mask
from modeling_unires.image_processing_unires import to_rgb_image

from .segmenters import UniRESSegmenter

PREDICTION_COLOUR = (255, 64, 64)
TRUTH_COLOUR = (64, 200, 64)


def overlay_mask(image: Image.Image, mask: np.ndarray, colour=PREDICTION_COLOUR, alpha: float = 0.55) -> Image.Image:
    """`image` with `mask` (bool, same size) tinted in `colour`."""
    base = np.asarray(to_rgb_image(image), dtype=np.float32)  # the pixels the model saw
    if mask.shape != base.shape[:2]:
        raise ValueError(f"mask of shape {mask.shape} does not match the image of size {image.size[::-1]}")
    tinted = base.copy()
    tinted[mask] = (1 - alpha) * base[mask] + alpha * np.asarray(colour, dtype=np.float32)
    return Image.fromarray(tinted.round().astype(np.uint8))


def draw_prediction_panel(
    image: Image.Image,
    expression: str,
    predicted: np.ndarray,
    truth: Optional[np.ndarray] = None,
    iou: Optional[float] = None,
    scale: int = 3,
) -> Image.Image:
    """One PNG-ready panel: image | prediction (red) | truth (green), the expression underneath."""
    image = to_rgb_image(image)  # the one rule: the pixels (and, after EXIF, the size) the model saw
    tiles = [image, overlay_mask(image, predicted, PREDICTION_COLOUR)]
    if truth is not None:
        tiles.append(overlay_mask(image, truth, TRUTH_COLOUR))
    width, height = image.width * scale, image.height * scale
    tiles = [tile.resize((width, height), Image.NEAREST) for tile in tiles]
    font = ImageFont.load_default()
    caption = f'"{expression}"' + (f"   IoU {iou:.2f}" if iou is not None else "")
    lines = textwrap.wrap(caption, width=max(20, len(tiles) * width // 7))
    line_height = 14
    canvas = Image.new("RGB", (width * len(tiles), height + 8 + line_height * (len(lines) + 1)), "white")
    for index, tile in enumerate(tiles):
        canvas.paste(tile, (index * width, 0))
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        draw.text((4, height + 4 + index * line_height), line, fill="black", font=font)
    prediction = "prediction (red)" if np.any(predicted) else "prediction (red): EMPTY, nothing above the threshold"
    legend = (f"left: image   middle: {prediction}   right: ground truth (green)" if truth is not None
              else f"left: image   right: {prediction}")  # two panels: no "middle"
    draw.text((4, height + 4 + len(lines) * line_height), legend, fill=(90, 90, 90), font=font)
    return canvas


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def pick_queries(rows, num: int) -> list[tuple[dict, dict, str]]:
    """About half object and half part queries, (row, referent, first sentence), in dataset order."""
    wanted = {"object": (num + 1) // 2, "part": num // 2}
    picked = []
    for row in rows:
        for referent in row["referents"]:
            granularity = referent["granularity"]
            sentences = sentences_of(referent)
            if wanted.get(granularity, 0) > 0 and sentences:
                picked.append((row, referent, sentences[0]))
                wanted[granularity] -= 1
                break  # one query per image keeps the panels varied
        if not any(wanted.values()):
            break
    return picked


def write_overlays(model, processor, rows, folder, num: int = 8) -> list[Path]:
    """Predict `num` queries and save one panel each (image | prediction | truth) under `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    segmenter = UniRESSegmenter(model, processor)
    written = []
    for index, (row, referent, sentence) in enumerate(pick_queries(rows, num)):
        predicted = segmenter.masks([row["image"]], [[sentence]])[0][0]
        truth = decode_mask(referent["mask"])
        union = np.logical_or(predicted, truth).sum()
        iou = float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
        panel = draw_prediction_panel(row["image"], sentence, predicted, truth, iou=iou)
        path = folder / f"{index:02d}-{referent['granularity']}-{_slug(sentence)}.png"
        panel.save(path)
        written.append(path)
    return written
