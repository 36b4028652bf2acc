#!/usr/bin/env python
r"""Re-run the paper's Table 8 group-token ablation on MRES-Synth with equal budgets.

Every setting trains the demo's model for the same number of steps on the same data
(generated once) and is evaluated by the same evaluator:

    python examples/ablate.py --output_dir outputs/ablation --max_steps 1500 \
        --settings full no_group_tokens

Writes `ablation.json` and prints object / part / object+part mIoU per setting.

A peer trained on equal terms (the paper's Table 3 comparison with a prior RES model, at demo scale):

    python examples/ablate.py --baseline clipseg --output_dir outputs/vs-clipseg-seed0 --seed 0

trains the demo's UniRES (`make demo`'s recipe) and a CLIPSegForImageSegmentation with the same CLIP towers, on the
same MRES-Synth data, batch shape and wall-clock budget (--train_minutes, default 10 as `make demo`), then scores
both with the evaluation harness (`results/*.json`, `comparison.md`). The logic is `unires.baselines.clipseg`.
"""

import argparse
import json
from pathlib import Path

from run_support.cli import HelpFormatter
from unires.demo_recipe import DEMO_NUM_EVAL, DEMO_NUM_TRAIN


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", default="outputs/ablation", help="Data, one run per setting, ablation.json.")
    parser.add_argument("--settings", nargs="+", default=["full", "no_group_tokens"],
                        help="Ablations to run: full, no_group_tokens, low_only, high_only.")
    parser.add_argument("--baseline", choices=["clipseg"], default=None,
                        help="Instead of the ablation: train this peer beside UniRES on equal terms and compare.")
    parser.add_argument("--max_steps", type=int, default=None,
                        help="Steps per setting (the equal budget; required for the ablation). With --baseline: a "
                             "fixed step count for both models instead of the time budget (for quick checks).")
    parser.add_argument("--train_minutes", type=float, default=10.0,
                        help="--baseline: wall-clock training budget of each model (as make demo).")
    parser.add_argument("--num_train", type=int, default=DEMO_NUM_TRAIN, help="MRES-Synth training images (generated once).")
    parser.add_argument("--num_eval", type=int, default=DEMO_NUM_EVAL, help="Images in validation, test and test_unseen.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the data and of every setting's run.")
    parser.add_argument("--config_overrides", type=json.loads, default={},
                        help="JSON of UniRESConfig arguments to change in the demo model.")
    args = parser.parse_args(argv)
    if args.baseline is None and args.max_steps is None:
        parser.error("the ablation needs --max_steps (the equal budget of every setting)")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.baseline == "clipseg":
        from unires.baselines import run_clipseg_comparison  # torch and transformers: after the command line is read

        comparison = run_clipseg_comparison(Path(args.output_dir), train_minutes=args.train_minutes,
                                            max_steps=args.max_steps, num_train=args.num_train,
                                            num_eval=args.num_eval, seed=args.seed)
        print("\n" + comparison["table"])
        return comparison
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
