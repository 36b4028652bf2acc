#!/usr/bin/env python
"""Evaluate a UniRES checkpoint on a split of any MRES-schema dataset.

    python examples/evaluate.py --model outputs/demo/model --dataset outputs/demo/data \
        --split validation --baselines full_image largest_object_box --output metrics.json

Prints the table (object / part / object+part × mIoU, oIoU, Prec@X, part–object confusion)
and writes it, with the options used, as JSON. The logic lives in `unires.evaluation`.
"""

import argparse
import json
from pathlib import Path

from unires.evaluation import BASELINES, evaluate_checkpoint, format_metrics_table


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="UniRES checkpoint: folder or Hub id.")
    parser.add_argument("--dataset", required=True, help="MRES-schema dataset: folder written by publish, or Hub id.")
    parser.add_argument("--split", nargs="+", default=["validation"], help="Split(s) to evaluate.")
    parser.add_argument("--resolution", choices=["original", "input"], default="original",
                        help="Compare at each image's size (CRIS, default) or at the model input size (LAVT).")
    parser.add_argument("--threshold", type=float, default=None, help="Mask threshold (default: the config's, 0.35).")
    parser.add_argument("--prec_comparison", choices=[">=", ">"], default=">=", help="IoU >= X (default) or > X (CRIS).")
    parser.add_argument("--baselines", nargs="*", default=[], choices=sorted(BASELINES),
                        help="Trivial baselines scored by the same evaluator.")
    parser.add_argument("--batch_size", type=int, default=16, help="Images per forward pass.")
    parser.add_argument("--max_images", type=int, default=None, help="Evaluate on the first N images only.")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available).")
    parser.add_argument("--trust_remote_code", action="store_true", help="Load a checkpoint's own code.")
    parser.add_argument("--output", default=None, help="Write the results as JSON here.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    results = evaluate_checkpoint(
        args.model,
        args.dataset,
        splits=args.split,
        resolution=args.resolution,
        threshold=args.threshold,
        prec_comparison=args.prec_comparison,
        baselines=args.baselines,
        batch_size=args.batch_size,
        max_images=args.max_images,
        device=args.device,
        trust_remote_code=args.trust_remote_code,
    )
    for split, by_method in results.items():
        print(f"\n## {split}\n")
        print(format_metrics_table(by_method, key_name="method"))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2))
        print(f"\nwritten to {args.output}")
    return results


if __name__ == "__main__":
    main()
