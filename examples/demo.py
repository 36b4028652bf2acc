#!/usr/bin/env python
"""`make demo`: the main job, offline, on a laptop-class CPU.

Generates MRES-Synth, trains a small UniRES for a fixed wall-clock budget, evaluates it on
`validation` and `test_unseen` beside two trivial baselines (the evaluation harness, as
`examples/evaluate_model.py` runs it), and writes to --output_dir: `metrics.json`, `evaluation.json` (the
harness's result: `evaluate_model.py --compare` reads it), `model/` (loadable with `AutoModel.from_pretrained`),
and overlay PNGs.
The recipe is `unires.demo.run_demo`; this file only parses the command line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from run_support.cli import HelpFormatter  # noqa: E402
from unires.demo_recipe import (  # noqa: E402  (light: no torch before parsing)
    DEMO_BATCH_SIZE,
    DEMO_LEARNING_RATE,
    DEMO_NUM_EVAL,
    DEMO_NUM_TRAIN,
    DEMO_REFERENTS_PER_IMAGE,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo", help="Where everything is written.")
    parser.add_argument("--train_minutes", type=float, default=10.0, help="Wall-clock training budget.")
    parser.add_argument("--max_steps", type=int, default=None,
                        help="Train exactly this many steps instead of planning them from --train_minutes.")
    parser.add_argument("--data_dir", default=None,
                        help="Reuse an MRES-Synth folder written earlier (None: generate into OUTPUT_DIR/data).")
    parser.add_argument("--num_train", type=int, default=DEMO_NUM_TRAIN, help="MRES-Synth training images.")
    parser.add_argument("--num_eval", type=int, default=DEMO_NUM_EVAL, help="Images in validation, test and test_unseen.")
    parser.add_argument("--batch_size", type=int, default=DEMO_BATCH_SIZE, help="Images per step.")
    parser.add_argument("--referents_per_image", type=int, default=DEMO_REFERENTS_PER_IMAGE,
                        help="Expressions per image per step (fewer when an image has fewer).")
    parser.add_argument("--learning_rate", type=float, default=DEMO_LEARNING_RATE, help="Peak learning rate (from scratch).")
    parser.add_argument("--ablation", default="full", help="full, no_group_tokens, low_only or high_only.")
    parser.add_argument("--config_overrides", type=json.loads, default={},
                        help='JSON of UniRESConfig arguments to change in the demo model, e.g. the paper\'s decoder: '
                             '\'{"decoder_token_stride": 1, "pixel_decoder_channels": 0}\'.')
    parser.add_argument("--num_overlays", type=int, default=8, help="Overlay PNGs per split.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data, the model's initialisation and training.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from unires.demo import run_demo  # torch and transformers: after the command line is read

    return run_demo(**vars(args))


if __name__ == "__main__":
    main()
