#!/usr/bin/env python
"""`make demo`: the main job, offline, on a laptop-class CPU.

Generates MRES-Synth, trains a small UniRES for a fixed wall-clock budget, evaluates it on
`validation` and `test_unseen` beside two trivial baselines, and writes to --output_dir:
`metrics.json`, `model/` (loadable with `AutoModel.from_pretrained`), and overlay PNGs.
Every step is a call into the packages; this file only wires them together and times them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from dataset_scripts.mres_synth import build_mres_synth  # noqa: E402
from modeling_unires import UniRESProcessor  # noqa: E402
from modeling_unires.evaluation import MRESMetricOptions, evaluate_methods, format_metrics_table  # noqa: E402
from modeling_unires.evaluation.overlays import write_overlays  # noqa: E402
from modeling_unires.training import (  # noqa: E402
    DataArguments,
    ModelArguments,
    MRESTrainingCollator,
    UniRESTrainingArguments,
    load_mres_dataset,
    run_training,
)
from modeling_unires.training.budget import measure_step_seconds, steps_for_budget  # noqa: E402
from modeling_unires.training.scratch import override_config_kwargs, prepare_from_scratch, sentences_of  # noqa: E402

# The demo's model: CLIP towers of width 128, 96×96 input with 8×8 patches (144 visual tokens). Two options that
# are off in the paper's model buy most of the demo's accuracy within its CPU budget: the decoder works on 2×2-pooled
# tokens (a quarter of the per-expression cost, so ~1.8x the steps) and a full-resolution pixel branch lets masks
# follow object edges inside a patch.
DEMO_IMAGE_SIZE = 96
DEMO_CONFIG = dict(
    vision_config=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                       image_size=DEMO_IMAGE_SIZE, patch_size=8),
    text_config=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4),
    num_low_group_tokens=16,
    num_high_group_tokens=4,
    decoder_hidden_size=128,
    decoder_num_attention_heads=4,
    decoder_stage1_layers=2,
    decoder_stage2_layers=1,
    decoder_intermediate_size=256,
    decoder_token_stride=2,
    pixel_decoder_channels=16,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="outputs/demo", help="Where everything is written.")
    parser.add_argument("--train_minutes", type=float, default=10.0, help="Wall-clock training budget.")
    parser.add_argument("--max_steps", type=int, default=None,
                        help="Train exactly this many steps instead of planning them from --train_minutes.")
    parser.add_argument("--data_dir", default=None,
                        help="Reuse an MRES-Synth folder written earlier (default: generate into OUTPUT_DIR/data).")
    parser.add_argument("--num_train", type=int, default=6000, help="MRES-Synth training images.")
    parser.add_argument("--num_eval", type=int, default=300, help="Images in validation, test and test_unseen.")
    parser.add_argument("--batch_size", type=int, default=4, help="Images per step.")
    parser.add_argument("--referents_per_image", type=int, default=8, help="Expressions per image per step.")
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="Peak learning rate (from scratch).")
    parser.add_argument("--ablation", default="full", help="full, no_group_tokens, low_only or high_only.")
    parser.add_argument("--config_overrides", type=json.loads, default={},
                        help='JSON of UniRESConfig arguments to change in the demo model, e.g. the paper\'s decoder: '
                             '\'{"decoder_token_stride": 1, "pixel_decoder_channels": 0}\'.')
    parser.add_argument("--num_overlays", type=int, default=8, help="Overlay PNGs per split.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


@contextmanager
def stage(name: str, timings: dict):
    print(f"\n==> {name}", flush=True)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)
    print(f"    {name}: {timings[name]:.1f} s", flush=True)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    with stage("generate MRES-Synth", timings):
        if args.data_dir:
            splits = ("train", "validation", "test", "test_unseen")
            data = {split: load_mres_dataset([args.data_dir], split) for split in splits}
        else:
            data = build_mres_synth(
                out / "data",
                image_size=DEMO_IMAGE_SIZE,
                num_images={"train": args.num_train, "validation": args.num_eval, "test": args.num_eval,
                            "test_unseen": args.num_eval},
                seed=args.seed,
            )
        print("    " + ", ".join(f"{split}: {len(ds)} images" for split, ds in data.items()))

    with stage("tokenizer and config", timings):
        config_kwargs = override_config_kwargs(DEMO_CONFIG, args.config_overrides)
        config_dir, processor_dir = prepare_from_scratch(sentences_of(data["train"]), out, config_kwargs=config_kwargs)
        processor = UniRESProcessor.from_pretrained(processor_dir)

    model_args = ModelArguments(config_name=str(config_dir), processor_name_or_path=str(processor_dir),
                                ablation=args.ablation)
    data_args = DataArguments(dataset=[args.data_dir or str(out / "data")], referents_per_image=args.referents_per_image,
                              max_eval_images=100)
    with stage("plan the training budget", timings):
        from modeling_unires.training.run import build_model

        probe_model = build_model(model_args)
        collator = MRESTrainingCollator(processor, args.referents_per_image, seed=args.seed)
        # Rows are read inside the timing (images and masks decode then), as they are in training.
        probe_rows = data["train"].select(range(min(64, len(data["train"]))))
        step_seconds = measure_step_seconds(probe_model, collator, probe_rows, args.batch_size, steps=10)
        max_steps = args.max_steps or steps_for_budget(args.train_minutes * 60, step_seconds)
        print(f"    {step_seconds:.3f} s/step → {max_steps} steps (budget {args.train_minutes:g} min)")
        del probe_model

    training_args = UniRESTrainingArguments(
        output_dir=str(out / "model"),
        seed=args.seed,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        weight_decay=5e-4,
        max_steps=max_steps,
        warmup_ratio=0.05,
        logging_steps=max(1, max_steps // 20),
        do_final_eval=False,
        report_to="none",
    )
    with stage("train", timings):
        trainer, _ = run_training(model_args, data_args, training_args, train_dataset=data["train"],
                                  eval_dataset=data["validation"])
    model = trainer.accelerator.unwrap_model(trainer.model).eval()

    metrics = {"options": None, "splits": {}}
    options = MRESMetricOptions(threshold=model.config.mask_threshold)
    with stage("evaluate", timings):
        for split in ("validation", "test_unseen"):
            metrics["splits"][split] = evaluate_methods(
                model, processor, data[split], options=options,
                baselines=("full_image", "largest_object_box"), batch_size=32,
            )
        metrics["options"] = options.to_dict()
    with stage("overlays", timings):
        for split in ("validation", "test_unseen"):
            write_overlays(model, processor, data[split], out / "overlays" / split, num=args.num_overlays)

    # The card written during training had no numbers yet: rewrite it with the table.
    trainer.save_model(eval_results={s: m["unires"] for s, m in metrics["splits"].items()})
    metrics["timings_seconds"] = timings
    metrics["training"] = {"steps": max_steps, "seconds_per_step_planned": round(step_seconds, 4),
                           "batch_size": args.batch_size, "referents_per_image": args.referents_per_image,
                           "parameters": sum(p.numel() for p in model.parameters()), "ablation": args.ablation,
                           "config_overrides": args.config_overrides}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    for split, by_method in metrics["splits"].items():
        print(f"\n## {split}\n")
        print(format_metrics_table(by_method, key_name="method"))
    print("\nstage timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    print(f"\nwritten: {out / 'metrics.json'}, {out / 'model'}, {out / 'overlays'}")
    return metrics


if __name__ == "__main__":
    main()
