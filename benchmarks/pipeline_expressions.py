#!/usr/bin/env python
"""The referring-expression-segmentation pipeline on one 640x480 image: 16 expressions vs 1 (target <= 2x).

The model is the demo's (`unires.demo.DEMO_CONFIG`): loaded from `--model` (default `outputs/demo/model` with its
processor beside it, when `make demo` has run) or else built from the config with random weights and a tokenizer
trained on a few sentences (speed does not depend on the weights). The pipeline is timed end to end (pre-processing,
one image encoding, decoding, post-processing to full-size PIL masks and scores, the defaults), and each stage alone
in a second loop, so that the JSON says where the time of 16 expressions goes; `with_rle_over_1` is the same ratio
with COCO RLE asked for (`return_rle=True`).

    python benchmarks/pipeline_expressions.py [--model outputs/demo/model]
"""

import os
import tempfile

import numpy as np
import torch
from PIL import Image
from transformers import pipeline

import modeling_unires  # noqa: F401  (registers the task)
from modeling_unires import UniRESConfig, UniRESImageProcessor, UniRESModel, UniRESProcessor, build_clip_tokenizer
from common import base_parser, device_info, emit, median, now, paired_ratio, paired_timings, parse_args, repo_path, \
    rounded
from tiny_models.unires import TINY_SENTENCES
from unires.demo import DEMO_CONFIG


EXPRESSIONS = [
    "the red car on the left", "left wheel of the blue bus", "the window of the small house", "the big green tree",
    "the right ear of the brown dog", "the yellow door of the car", "the roof of the house", "the front wheel",
    "the small blue bus", "the green car", "the left window", "the dog on the right", "the tail of the dog",
    "the chimney of the house", "the headlight of the red car", "the big yellow house",
]


def demo_segmenter(model_path, device):
    if model_path and os.path.isdir(model_path):
        return pipeline("referring-expression-segmentation", model=model_path, device=device), "checkpoint " + model_path
    tokenizer = build_clip_tokenizer(TINY_SENTENCES + EXPRESSIONS, vocab_size=1200, model_max_length=17)
    config = UniRESConfig(**DEMO_CONFIG).fit_to_tokenizer(tokenizer)
    torch.manual_seed(0)
    model = UniRESModel(config)
    processor = UniRESProcessor(UniRESImageProcessor(size=config.image_size, mask_threshold=config.mask_threshold),
                                tokenizer, text_max_length=config.text_max_length)
    folder = tempfile.mkdtemp(prefix="bench-pipeline-")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return pipeline("referring-expression-segmentation", model=folder, device=device), "DEMO_CONFIG, random weights"


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--model", default="outputs/demo/model")
    parser.add_argument("--expressions", type=int, default=16)
    args = parse_args(parser)
    repeats = args.repeats or (1 if args.quick else 10)
    segmenter, model_name = demo_segmenter(repo_path(args.model), args.device)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    many = (EXPRESSIONS * (args.expressions // len(EXPRESSIONS) + 1))[: args.expressions]

    timings = paired_timings({"one": lambda: segmenter(image, [many[0]]), "many": lambda: segmenter(image, many),
                              "many_with_rle": lambda: segmenter(image, many, return_rle=True)},
                             repeats, args.device)

    # Where the time goes: the pipeline's own three stages, called one after the other.
    stages = {f"{stage}_{n}": [] for n in ("one", "many") for stage in ("preprocess", "forward", "postprocess")}
    for _ in range(repeats):
        for name, texts in (("one", [many[0]]), ("many", many)):
            pieces = {}
            start = now(args.device)
            inputs = segmenter.preprocess([{"image": image, "text": texts}])
            pieces["preprocess"] = now(args.device)
            outputs = segmenter.forward(inputs)
            pieces["forward"] = now(args.device)
            segmenter.postprocess(outputs)
            pieces["postprocess"] = now(args.device)
            previous = start
            for stage, end in pieces.items():
                stages[f"{stage}_{name}"].append(end - previous)
                previous = end

    if args.profile:
        import cProfile
        import pstats
        import sys

        profiler = cProfile.Profile()
        profiler.runcall(segmenter, image, many)
        print(f"\n=== cProfile: pipeline, {len(many)} expressions ===", file=sys.stderr)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(15)

    emit(f"pipeline_{args.expressions}_expressions_over_1", paired_ratio(timings["many"], timings["one"]), "<= 2",
         description=f"pipeline time on one 640x480 image: {args.expressions} expressions / 1 expression",
         with_rle_over_1=paired_ratio(timings["many_with_rle"], timings["one"]),
         timings_s=rounded(timings), median_s={n: round(median(v), 5) for n, v in timings.items()},
         stage_median_s={n: round(median(v), 5) for n, v in stages.items()},
         setup=dict(image="640x480 RGB (PIL)", model=model_name, expressions=args.expressions, repeats=repeats,
                    output="PIL masks at 640x480 + scores (the pipeline's defaults); with_rle_over_1 adds "
                           "return_rle=True to the 16"),
         device=device_info(args.device))


if __name__ == "__main__":
    main()
