"""What the page shows for a set of masks: one overlay with a colour per expression, its legend with scores, the
time of each step, and the files to download (a PNG per expression, one JSON of COCO RLEs)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from PIL import Image

from dataset_scripts.masks import encode_mask
from unires.evaluation.overlays import _slug

# Distinct, saturated colours (Tableau 10 then a few more), one per expression in order; repeats past 16.
PALETTE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (255, 215, 0), (0, 0, 128),
    (128, 0, 0), (0, 128, 128), (255, 0, 255), (0, 255, 0),
]
MASKS_JSON = "masks.json"


def colour_of(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def overlay_masks(image: Image.Image, masks: list[np.ndarray], alpha: float = 0.5) -> Image.Image:
    """
    `image` (its size unchanged) with mask `i` tinted in `colour_of(i)`, as `unires.evaluation.overlays.overlay_mask`
    tints one mask; later masks are drawn over earlier. PIL's blend and composite keep the image in 8 bits, so eight
    masks on a 2048 × 2048 image take tens of milliseconds rather than seconds.
    """
    overlay = image.convert("RGB")
    for index, mask in enumerate(masks):
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (overlay.height, overlay.width):
            raise ValueError(f"mask {index} has shape {mask.shape} but the image is {(overlay.height, overlay.width)}")
        tinted = Image.blend(overlay, Image.new("RGB", overlay.size, colour_of(index)), alpha)
        overlay = Image.composite(tinted, overlay, Image.fromarray(mask.astype(np.uint8) * 255))
    return overlay


def legend_html(expressions: list[str], scores: list[float], masks: list[np.ndarray]) -> str:
    """One line per expression: its colour, the expression (escaped), its score and the share of pixels it covers."""
    if len(expressions) != len(scores) or len(expressions) != len(masks):
        raise ValueError(f"{len(expressions)} expressions, {len(scores)} scores and {len(masks)} masks: one of each")
    rows = []
    for index, (expression, score, mask) in enumerate(zip(expressions, scores, masks)):
        red, green, blue = colour_of(index)
        area = float(np.asarray(mask).mean()) if np.asarray(mask).size else 0.0
        empty = "" if area > 0 else " — empty mask (try a lower threshold)"
        rows.append(
            f'<li class="unires-legend-item" data-index="{index}">'
            f'<span class="unires-swatch" style="display:inline-block;width:1em;height:1em;margin-right:0.5em;'
            f'vertical-align:middle;background:rgb({red},{green},{blue})"></span>'
            f'<span class="unires-expression">{html.escape(expression)}</span> — '
            f'<span class="unires-score">score {score:.2f} · {area:.1%} of the image{empty}</span></li>'
        )
    return '<ul class="unires-legend" style="list-style:none;padding-left:0">' + "".join(rows) + "</ul>"


def timings_markdown(steps: list[tuple[str, float]]) -> str:
    """A Markdown table of the steps of one request and their time, with the total."""
    lines = ["| step | time |", "|---|---|"]
    lines += [f"| {name} | {seconds * 1000:.1f} ms |" for name, seconds in steps]
    lines.append(f"| **total** | **{sum(seconds for _, seconds in steps) * 1000:.1f} ms** |")
    return "\n".join(lines)


def write_mask_downloads(
    folder, expressions: list[str], masks: list[np.ndarray], scores: list[float], threshold: float
) -> list[Path]:
    """
    Write one 0/255 PNG per expression (`NN-<expression>.png`) and `masks.json` (each expression's text, score,
    PNG name and COCO RLE `{"size": [h, w], "counts": str}`) into `folder`; return the paths, PNGs first.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, records = [], []
    for index, (expression, mask, score) in enumerate(zip(expressions, masks, scores)):
        mask = np.asarray(mask, dtype=bool)
        path = folder / f"{index:02d}-{_slug(expression) or 'expression'}.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        paths.append(path)
        rle = encode_mask(mask, name=f"mask of {expression!r}")
        records.append({"text": expression, "score": float(score), "png": path.name, "rle": rle})
    height, width = np.asarray(masks[0]).shape if masks else (0, 0)
    summary = {"threshold": float(threshold), "image_size": [int(height), int(width)], "masks": records}
    json_path = folder / MASKS_JSON
    json_path.write_text(json.dumps(summary, indent=2))
    return paths + [json_path]
