#!/usr/bin/env python
"""The app's time per step for one 640x480 image and 8 expressions: encode, text + decoder, masks.

The app (`unires.app`) encodes an image once (`Segmenter.encode`: processor + vision tower), decodes the asked
expressions from that encoding (`Segmenter.decode`: text tower, decoder, mask head) and makes the masks with their
scores at the image size (`Segmenter.masks`: `post_process_masks`). Each step is timed on its own, repeated; the
model is the demo's (`--model`, default `outputs/demo/model`; a random model of the demo's config when missing), and
with `--paper` the paper-size model at 480x480 (random weights). No target: the figures go into the README table.

    python benchmarks/app_steps.py --threads 2 --clock wall      # "on 2 cores"
"""


import numpy as np
import torch
from PIL import Image

from common import base_parser, device_info, emit, median, now, paper_config, parse_args, repo_path
from pipeline_expressions import EXPRESSIONS, demo_segmenter


def segmenter_for(args):
    from unires.app import Segmenter

    if args.paper:
        from modeling_unires import UniRESImageProcessor, UniRESModel, UniRESProcessor, build_clip_tokenizer
        from tiny_models.unires import TINY_SENTENCES

        size = 64 if args.quick else 480
        torch.manual_seed(0)
        model = UniRESModel(paper_config(size))
        tokenizer = build_clip_tokenizer(TINY_SENTENCES + EXPRESSIONS, vocab_size=1200, model_max_length=17)
        processor = UniRESProcessor(UniRESImageProcessor(size=size), tokenizer, text_max_length=17)
        return Segmenter(model, processor, device=args.device), f"paper size @{size}, random weights"
    pipe, name = demo_segmenter(None if args.quick else repo_path(args.model), args.device)
    return Segmenter(pipe.model, pipe.processor, device=args.device), name


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--model", default="outputs/demo/model")
    parser.add_argument("--expressions", type=int, default=8)
    parser.add_argument("--paper", action="store_true", help="the paper-size model at 480x480 instead of the demo's")
    args = parse_args(parser)
    repeats = args.repeats or (1 if args.quick else 7)
    segmenter, model_name = segmenter_for(args)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8))
    texts = EXPRESSIONS[: args.expressions]
    steps = {"encode": [], "text_and_decoder": [], "masks": []}
    for index in range(repeats + 1):  # the first round warms up
        start = now(args.device)
        encoded = segmenter.encode(image, f"image-{index}")
        encoded_at = now(args.device)
        logits = segmenter.decode(encoded, texts)
        decoded_at = now(args.device)
        segmenter.masks(logits, encoded.size, segmenter.default_threshold, texts=texts)
        done = now(args.device)
        if index:
            steps["encode"].append(encoded_at - start)
            steps["text_and_decoder"].append(decoded_at - encoded_at)
            steps["masks"].append(done - decoded_at)
    info = device_info(args.device)
    which = "paper" if args.paper else "demo"
    for step, values in steps.items():
        emit(f"app_{which}_{step}_s", median(values), None,
             description=f"app step '{step}', 1 image (640x480) + {len(texts)} expressions, {model_name}",
             timings_s=[round(v, 5) for v in values],
             setup=dict(model=model_name, expressions=len(texts), repeats=repeats), device=info)


if __name__ == "__main__":
    main()
