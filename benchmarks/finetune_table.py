#!/usr/bin/env python
"""Fine-tuning the `make demo` model on little data, three ways: what each buys on pairs it never saw, and what it
costs (issue 30, item 2). One command:

    .venv/bin/python benchmarks/finetune_table.py                       # base: outputs/demo/model (make demo)
    .venv/bin/python benchmarks/finetune_table.py --base_model path/to/unires --sizes 100 --ways lora

The demo model trained on MRES-Synth `train`, whose category–colour pairs exclude a held-out set (each category
misses two colours: `dataset_scripts.mres_synth.held_out_combinations`). This script generates MRES-Synth's
`train_unseen` split (images of held-out pairs only, other images than `test_unseen`), fine-tunes the demo model on its
first 100 and first 500 images with `--finetune full`, `frozen_towers` and `lora` (`unires.training.run_training`, as
`examples/train.py` runs it), and reports for each way and size:

- mIoU (object, part) on `test_unseen` (the held-out pairs) before and after;
- mIoU on the demo's `validation` split after (the seen pairs: forgetting);
- trainable parameters; the size on disk of the saved model (the adapter for LoRA) and of a resumable checkpoint
  (weights + AdamW state); the training wall time.

Every run has the same fixed budget (`--steps` optimisation steps of `--batch_size` images × `--referents_per_image`
expressions, cosine schedule with 10 % warm-up), so that the sizes differ in how many distinct images they show, not in
compute. Learning rates: `--lr_full` for full and frozen_towers, `--lr_lora` for LoRA (LoRA's usual 10× larger rate;
r `--lora_r`, alpha 2r, dropout 0.05, on every linear layer of the decoder and mask head). Evaluation uses the first
`--eval_images` images of each split, loaded the way `examples/evaluate_model.py` loads a model (an adapter: base +
adapter, merged).

Prints a Markdown table and one JSON line per figure (`benchmarks/common.emit`), and writes everything (device, git
commit, setup, every metric) to `--output` (default benchmarks/finetune_results.json), in results.json's layout.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import base_parser, device_info, emit, parse_args, repo_path  # noqa: E402

HERE = Path(__file__).resolve().parent
WAYS = ("full", "frozen_towers", "lora")


def build_parser():
    parser = base_parser(__doc__)
    parser.set_defaults(device="cpu")
    add = parser.add_argument
    add("--base_model", default="outputs/demo/model", help="the UniRES to fine-tune (default: make demo's model)")
    add("--output_dir", default="outputs/finetune_table", help="data, fine-tuned models and checkpoints go here")
    add("--sizes", type=int, nargs="+", default=[100, 500], help="fine-tuning set sizes (images of unseen pairs)")
    add("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    add("--steps", type=int, default=200, help="optimisation steps of every run (the fixed budget)")
    add("--batch_size", type=int, default=4, help="images per step (the demo's)")
    add("--referents_per_image", type=int, default=16, help="expressions per image per step (the demo's)")
    add("--lr_full", type=float, default=1e-4, help="peak learning rate of full and frozen_towers")
    add("--lr_lora", type=float, default=1e-3, help="peak learning rate of LoRA")
    add("--lora_r", type=int, default=8, help="LoRA rank (alpha = 2r)")
    add("--eval_images", type=int, default=150, help="images of test_unseen and of validation scored")
    add("--seed", type=int, default=0, help="MRES-Synth's seed (the demo's: 0) and the runs' seed")
    add("--output", default=str(HERE / "finetune_results.json"), help="the JSON written")
    add("--note", default=None, help="written into the JSON (e.g. how loaded the machine was)")
    return parser


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def weights_bytes(folder: Path) -> int:
    """The saved weights: model.safetensors, or the adapter's adapter_model.safetensors."""
    for name in ("adapter_model.safetensors", "model.safetensors"):
        if (folder / name).is_file():
            return (folder / name).stat().st_size
    raise FileNotFoundError(f"no saved weights in {folder}")


def score(model_folder, rows: dict, eval_images: int) -> dict:
    """mIoU (object, part, object+part) per split, the model loaded as examples/evaluate_model.py loads it."""
    from unires.evaluation.harness import evaluate_segmenter
    from unires.evaluation.segmenters.unires import UniRESSegmenter

    segmenter = UniRESSegmenter.from_pretrained(str(model_folder), device="cpu")
    out = {}
    for split, data in rows.items():
        metrics = evaluate_segmenter(segmenter, data, max_images=eval_images, progress=False, batch_size=8,
                                     what=f"{split}")
        out[split] = {group: round(metrics[group]["mIoU"], 2) for group in ("object", "part", "object+part")}
        out[split]["expressions"] = metrics["object+part"]["count"]
    return out


def fine_tune(args, base: str, data_dir: Path, train_rows, way: str, size: int, out: Path) -> dict:
    from unires.training import DataArguments, ModelArguments, UniRESTrainingArguments, run_training
    from unires.training.finetune import count_parameters

    model_args = ModelArguments(model_name_or_path=base, finetune=way, lora_r=args.lora_r, lora_alpha=2 * args.lora_r)
    data_args = DataArguments(dataset=[str(data_dir)], train_split=f"train_unseen[:{size}]", eval_split="",
                              referents_per_image=args.referents_per_image)
    training_args = UniRESTrainingArguments(
        output_dir=str(out), seed=args.seed, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr_lora if way == "lora" else args.lr_full, max_steps=args.steps, warmup_ratio=0.1,
        logging_steps=max(1, args.steps // 10), save_steps=args.steps, save_total_limit=1, do_final_eval=False,
        overwrite_output_dir=True, report_to="none", disable_progress_bar=True,
    )
    start = time.perf_counter()
    trainer, _ = run_training(model_args, data_args, training_args, train_dataset=train_rows.select(range(size)))
    seconds = time.perf_counter() - start
    trainable, total = count_parameters(trainer.accelerator.unwrap_model(trainer.model))
    checkpoint = out / f"checkpoint-{args.steps}"
    return {"way": way, "images": size, "steps": args.steps, "train_seconds": round(seconds, 1),
            "trainable_parameters": trainable, "total_parameters": total,
            "saved_weights_bytes": weights_bytes(out), "checkpoint_bytes": folder_bytes(checkpoint),
            "final_loss": trainer.losses[-1][1] if trainer.losses else None,
            "learning_rate": training_args.learning_rate}


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n < 1e8 else f"{n / 1e6:.0f} MB"


def markdown(before: dict, runs: list, device: dict, setup: dict, total_seconds: float) -> str:
    unseen0, val0 = before["test_unseen"], before["validation"]
    lines = [
        "| way | images | trainable params | saved weights | checkpoint | train time | unseen object mIoU | "
        "unseen part mIoU | validation mIoU (forgetting) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| before (demo model) | — | — | — | — | — | {unseen0['object']:.1f} | {unseen0['part']:.1f} | "
        f"{val0['object+part']:.1f} |",
    ]
    for run in runs:
        unseen, val = run["after"]["test_unseen"], run["after"]["validation"]
        lines.append(
            f"| {run['way']} | {run['images']} | {run['trainable_parameters']:,} "
            f"({100 * run['trainable_parameters'] / run['total_parameters']:.1f} %) | {_mb(run['saved_weights_bytes'])} | "
            f"{_mb(run['checkpoint_bytes'])} | {run['train_seconds']:.0f} s | {unseen0['object']:.1f} → "
            f"{unseen['object']:.1f} | {unseen0['part']:.1f} → {unseen['part']:.1f} | {val0['object+part']:.1f} → "
            f"{val['object+part']:.1f} |")
    where = device.get("gpu") or f"{device['cpu']} ({device['cpu_count']} cores, {device['torch_threads']} torch threads)"
    lines.append("")
    lines.append(f"{setup['steps']} steps × {setup['batch_size']} images × {setup['referents_per_image']} expressions "
                 f"per run; mIoU on the first {setup['eval_images']} images of test_unseen and validation; {where}; "
                 f"whole command {total_seconds / 60:.1f} min.")
    return "\n".join(lines)


def git_state() -> dict:
    def git(*command):
        return subprocess.run(["git", *command], cwd=HERE, capture_output=True, text=True).stdout.rstrip()

    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_changes_in": git("status", "--porcelain", "--", "../modeling_unires", "../unires",
                                          "../dataset_scripts", "finetune_table.py").splitlines()}


def main():
    args = parse_args(build_parser())
    started = time.perf_counter()
    base = repo_path(args.base_model)
    if not Path(base).is_dir():
        sys.exit(f"error: no model at {base}: run `make demo` first (it trains the demo model into outputs/demo/model "
                 "in about 10 CPU minutes), or pass --base_model")
    if args.quick:
        args.sizes, args.steps, args.eval_images = [min(args.sizes)], 2, 4

    from dataset_scripts.mres_synth import build_mres_synth
    from modeling_unires import UniRESConfig

    out = Path(repo_path(args.output_dir))
    image_size = UniRESConfig.from_pretrained(base).image_size
    data_dir = out / "data"
    # Image i of a split is drawn from (seed, split, i) alone: with the demo's seed, validation and test_unseen are
    # the demo's own first images; train_unseen holds other images of the held-out pairs.
    print(f"==> MRES-Synth at {image_size}²: train_unseen {max(args.sizes)}, validation and test_unseen "
          f"{args.eval_images}", file=sys.stderr, flush=True)
    data = build_mres_synth(str(data_dir), image_size=image_size, seed=args.seed,
                            num_images={"train": 0, "validation": args.eval_images, "test": 0,
                                        "test_unseen": args.eval_images, "train_unseen": max(args.sizes)})
    eval_rows = {"test_unseen": data["test_unseen"], "validation": data["validation"]}

    print("==> the base model before fine-tuning", file=sys.stderr, flush=True)
    before = score(base, eval_rows, args.eval_images)
    runs = []
    for size in args.sizes:
        for way in args.ways:
            print(f"==> {way} on {size} images", file=sys.stderr, flush=True)
            folder = out / f"{way}-{size}"
            run = fine_tune(args, base, data_dir, data["train_unseen"], way, size, folder)
            start = time.perf_counter()
            run["after"] = score(folder, eval_rows, args.eval_images)
            run["eval_seconds"] = round(time.perf_counter() - start, 1)
            runs.append(run)
            print(f"    {run['train_seconds']} s training; test_unseen {run['after']['test_unseen']}, validation "
                  f"{run['after']['validation']}", file=sys.stderr, flush=True)
            emit(f"finetune/{way}/{size}/test_unseen_mIoU", run["after"]["test_unseen"]["object+part"], None,
                 description=f"{way}, {size} images: mIoU on test_unseen after (before "
                             f"{before['test_unseen']['object+part']})", run=run)

    total = time.perf_counter() - started
    setup = {"base_model": args.base_model, "sizes": args.sizes, "ways": args.ways, "steps": args.steps,
             "batch_size": args.batch_size, "referents_per_image": args.referents_per_image,
             "lr_full": args.lr_full, "lr_lora": args.lr_lora, "lora_r": args.lora_r, "lora_alpha": 2 * args.lora_r,
             "eval_images": args.eval_images, "seed": args.seed, "schedule": "cosine, 10% warm-up",
             "quick": args.quick}
    device = device_info("cpu")
    results = {
        "generated_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "benchmarks/finetune_table.py", *sys.argv[1:]]),
        "device": device,
        "git": git_state(),
        "threads": device["torch_threads"],
        "note": args.note,
        "wall_seconds": {"total": round(total, 1)},
        "setup": setup,
        "before": before,
        "runs": runs,
    }
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(before, runs, device, setup, total))
    print(f"\nwritten: {args.output} ({total:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
