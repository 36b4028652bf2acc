#!/usr/bin/env python
r"""Segment what each expression names in one image, and save a panel per expression.

    python examples/predict.py --model outputs/demo/model --image photo.png \
        "the red car" "the wheels of the red car" --output_dir outputs/predictions

Each panel shows the image (left) and the predicted mask in red (right), the expression underneath. An empty
mask (nothing above the threshold) is flagged on the console, in the panel and in predictions.json.
"""

import argparse
import json
import re
import sys
from pathlib import Path

from run_support.cli import HelpFormatter, probability, refuse_missing_paths
from unires.quantize_option import add_quantize_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", required=True, help="UniRES checkpoint: folder or Hub id.")
    parser.add_argument("--image", required=True, help="Image path, http(s) URL or data: URI.")
    parser.add_argument("expressions", nargs="+", help="One or more referring expressions.")
    parser.add_argument("--threshold", type=probability, default=None,
                        help="Mask threshold, a probability in [0, 1] (None: the model's config.mask_threshold, 0.35 "
                             "by default).")
    parser.add_argument("--output_dir", default="outputs/predictions",
                        help="Where the panels and predictions.json are written.")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (None: the pipeline's choice).")
    add_quantize_argument(parser)
    args = parser.parse_args(argv)
    # A mistyped path is named as one, before the model loads (an image may also be a URL or a data: URI).
    remote_image = args.image.startswith(("http://", "https://", "data:"))
    refuse_missing_paths(parser, local_or_hub=[("--model", args.model, "model")],
                         local=[("--image", None if remote_image else args.image, "image file")])
    return args


def main(argv=None):
    args = parse_args(argv)
    # Heavy imports after the command line is read: `--help` and a mistyped path answer at once.
    import numpy as np
    from transformers import pipeline

    import modeling_unires  # noqa: F401  (registers the task)
    from modeling_unires.image_loading_unires import open_image
    from modeling_unires.image_processing_unires import to_rgb_image
    from unires.evaluation.overlays import draw_prediction_panel

    try:
        # The image processor's own reading (EXIF rotation, alpha on white): the panel shows what the model saw.
        image = to_rgb_image(open_image(args.image))
    except ValueError as error:  # "No image file at X", an unreadable file, a failed download
        raise SystemExit(f"--image: {error}") from None
    from modeling_unires.quantization_unires import quantization_config

    model_kwargs = {"quantization_config": quantization_config(args.quantize)} if args.quantize != "none" else {}
    segmenter = pipeline("referring-expression-segmentation", model=args.model, device=args.device,
                         model_kwargs=model_kwargs)
    results = segmenter(image, args.expressions, threshold=args.threshold, mask_format="numpy", return_rle=True)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary, empty_count = [], 0
    for index, result in enumerate(results):
        mask = np.asarray(result["mask"], dtype=bool)
        empty = not mask.any()
        empty_count += empty
        slug = re.sub(r"[^a-z0-9]+", "-", result["text"].lower()).strip("-")[:60]
        path = out / f"{index:02d}-{slug}.png"
        draw_prediction_panel(image, result["text"], mask).save(path)
        summary.append({"text": result["text"], "score": result["score"], "empty": empty, "rle": result["rle"],
                        "panel": str(path)})
        flag = "  EMPTY MASK: nothing above the threshold (try a lower --threshold)" if empty else ""
        print(f"{result['score']:.3f}  {result['text']!r} -> {path}{flag}")
    (out / "predictions.json").write_text(json.dumps(summary, indent=2))
    if empty_count:
        print(f"warning: {empty_count} of {len(results)} masks are empty", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
