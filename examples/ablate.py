#!/usr/bin/env python
r"""Re-run the paper's Table 8 group-token ablation on MRES-Synth with equal budgets.

Every setting trains the demo's model for the same number of steps on the same data
(generated once) and is evaluated by the same evaluator:

    python examples/ablate.py --output_dir outputs/ablation --max_steps 1500 \
        --settings full no_group_tokens

Writes `ablation.json` and prints object / part / object+part mIoU per setting.
"""

import argparse
import json
from pathlib import Path

from dataset_scripts.cli import HelpFormatter


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="outputs/ablation", help="Data, one run per setting, ablation.json.")
    parser.add_argument("--settings", nargs="+", default=["full", "no_group_tokens"],
                        help="Ablations to run: full, no_group_tokens, low_only, high_only.")
    parser.add_argument("--max_steps", type=int, required=True, help="Steps per setting (the equal budget).")
    parser.add_argument("--num_train", type=int, default=6000, help="MRES-Synth training images (generated once).")
    parser.add_argument("--num_eval", type=int, default=300, help="Images in validation, test and test_unseen.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data and of every setting's run.")
    parser.add_argument("--config_overrides", type=json.loads, default={},
                        help="JSON of UniRESConfig arguments to change in the demo model.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from unires.demo import build_demo_data, run_demo  # torch and transformers: after the command line is read
    from unires.evaluation import format_metrics_table

    out = Path(args.output_dir)
    build_demo_data(out / "data", num_train=args.num_train, num_eval=args.num_eval, seed=args.seed)
    results = {}
    for setting in args.settings:
        metrics = run_demo(out / setting, data_dir=out / "data", ablation=setting, max_steps=args.max_steps,
                           seed=args.seed, num_overlays=0, config_overrides=args.config_overrides)
        results[setting] = {split: by_method["unires"] for split, by_method in metrics["splits"].items()}
        results[setting]["training"] = metrics["training"]
        results[setting]["train_seconds"] = metrics["timings_seconds"]["train"]
    (out / "ablation.json").write_text(json.dumps(results, indent=2))
    for split in ("validation", "test_unseen"):
        print(f"\n## {split}\n")
        print(format_metrics_table({setting: r[split] for setting, r in results.items()}, key_name="ablation"))
    return results


if __name__ == "__main__":
    main()
