#!/usr/bin/env python
"""Segment what each expression names in one image, and save a panel per expression.

    python examples/predict.py --model outputs/demo/model --image photo.png \
        "the red car" "the wheels of the red car" --output_dir outputs/predictions
"""

import argparse
import json
import re
from pathlib import Path

import numpy as np
from transformers import pipeline
from transformers.image_utils import load_image

import modeling_unires  # noqa: F401  (registers the task)
from unires.evaluation.overlays import draw_prediction_panel


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="UniRES checkpoint: folder or Hub id.")
    parser.add_argument("--image", required=True, help="Image path or URL.")
    parser.add_argument("expressions", nargs="+", help="One or more referring expressions.")
    parser.add_argument("--threshold", type=float, default=None, help="Mask threshold (default: the model's, 0.35).")
    parser.add_argument("--output_dir", default="outputs/predictions")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the pipeline's choice).")
    args = parser.parse_args(argv)

    segmenter = pipeline("referring-expression-segmentation", model=args.model, device=args.device)
    image = load_image(args.image)
    results = segmenter(image, args.expressions, threshold=args.threshold, mask_format="numpy")
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for index, result in enumerate(results):
        slug = re.sub(r"[^a-z0-9]+", "-", result["text"].lower()).strip("-")[:60]
        path = out / f"{index:02d}-{slug}.png"
        draw_prediction_panel(image, result["text"], np.asarray(result["mask"], dtype=bool)).save(path)
        summary.append({"text": result["text"], "score": result["score"], "rle": result["rle"], "panel": str(path)})
        print(f"{result['score']:.3f}  {result['text']!r} -> {path}")
    (out / "predictions.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
