"""The demo recipe: MRES-Synth → a small UniRES trained from scratch for a wall-clock budget → evaluated.

`examples/demo.py` (`make demo`) and `examples/ablate.py` (the paper's Table 8 at the demo's
budget) both call `run_demo`. Everything is offline and sized for a laptop-class CPU.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from accelerate.utils import set_seed

from dataset_scripts.load import load_mres_dataset
from dataset_scripts.mres_synth import build_mres_synth
from modeling_unires import UniRESConfig, UniRESModel
from run_support.budget import measure_step_seconds, steps_for_budget

from .demo_recipe import (  # the recipe as data (kept light for --help); re-exported here
    DEMO_BATCH_SIZE,
    DEMO_CONFIG,
    DEMO_IMAGE_SIZE,
    DEMO_LEARNING_RATE,
    DEMO_MAX_GRAD_NORM,
    DEMO_NUM_EVAL,
    DEMO_NUM_TRAIN,
    DEMO_REFERENTS_PER_IMAGE,
    DEMO_SPLITS,
    DEMO_WARMUP_RATIO,
    DEMO_WEIGHT_DECAY,
    EVAL_SPLITS,
)
from .evaluation import BASELINES, UniRESSegmenter, format_metrics_table, run_evaluation
from .evaluation.overlays import write_overlays
from .training import DataArguments, ModelArguments, MRESTrainingCollator, UniRESTrainingArguments, run_training
from .training.scratch import all_sentences, override_config_kwargs, prepare_from_scratch


@contextmanager
def _stage(name: str, timings: dict):
    print(f"\n==> {name}", flush=True)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 1)
    print(f"    {name}: {timings[name]:.1f} s", flush=True)


def build_demo_data(folder, *, num_train: int = DEMO_NUM_TRAIN, num_eval: int = DEMO_NUM_EVAL, seed: int = 0) -> dict:
    """MRES-Synth at the demo's size: {split: Dataset}, written to `folder`."""
    num_images = {"train": num_train, "validation": num_eval, "test": num_eval, "test_unseen": num_eval}
    return build_mres_synth(folder, image_size=DEMO_IMAGE_SIZE, num_images=num_images, seed=seed)


def run_demo(
    output_dir,
    *,
    train_minutes: float = 10.0,
    max_steps: Optional[int] = None,
    data_dir=None,
    num_train: int = DEMO_NUM_TRAIN,
    num_eval: int = DEMO_NUM_EVAL,
    batch_size: int = DEMO_BATCH_SIZE,
    referents_per_image: int = DEMO_REFERENTS_PER_IMAGE,
    learning_rate: float = DEMO_LEARNING_RATE,
    ablation: str = "full",
    config_overrides: Optional[dict] = None,
    num_overlays: int = 8,
    seed: int = 0,
) -> dict:
    """Generate (or reuse) MRES-Synth, train for the budget, evaluate beside two baselines; returns the metrics.

    Writes to `output_dir`: `metrics.json`, `evaluation.json` (the harness's result, with the dataset's identity
    and the conventions: `examples/evaluate_model.py --compare` reads it), `model/` (loadable with
    `AutoModel.from_pretrained`), `overlays/` and, unless `data_dir` is given, `data/`.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_overrides = config_overrides or {}
    timings: dict[str, float] = {}

    with _stage("generate MRES-Synth", timings):
        if data_dir:
            data = {split: load_mres_dataset([str(data_dir)], split) for split in DEMO_SPLITS}
        else:
            data = build_demo_data(out / "data", num_train=num_train, num_eval=num_eval, seed=seed)
        print("    " + ", ".join(f"{split}: {len(ds)} images" for split, ds in data.items()))

    with _stage("tokenizer and config", timings):
        config_kwargs = override_config_kwargs(
            DEMO_CONFIG, {**config_overrides, **UniRESConfig.ablation_kwargs(ablation)}
        )
        config, processor = prepare_from_scratch(all_sentences(data["train"]), out, config_kwargs=config_kwargs)

    # Built once: the budget probe times a copy of this model, and training trains this model.
    set_seed(seed)
    model = UniRESModel(config)
    collator = MRESTrainingCollator(processor, referents_per_image, seed=seed)
    step_seconds = None
    if max_steps:  # a fixed --max_steps is a fixed run: nothing to plan, no probe to time
        budget_minutes = None
    else:
        with _stage("plan the training budget", timings):
            # Rows are read inside the timing (images and masks decode then), as they are in training.
            probe_rows = data["train"].select(range(min(64, len(data["train"]))))
            step_seconds = measure_step_seconds(model, collator, probe_rows, batch_size, steps=10)
            # The probe's plan is revised during training to meet the budget.
            budget_minutes = train_minutes
            max_steps = steps_for_budget(train_minutes * 60, step_seconds)
            print(f"    {step_seconds:.3f} s/step → {max_steps} steps planned (budget {train_minutes:g} min)")

    model_args = ModelArguments(config_name=str(out / "config"), processor_name_or_path=str(out / "processor"),
                                ablation=ablation)
    data_args = DataArguments(dataset=[str(data_dir or out / "data")], referents_per_image=referents_per_image,
                              max_eval_images=100)
    training_args = UniRESTrainingArguments(
        output_dir=str(out / "model"),
        seed=seed,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=DEMO_WEIGHT_DECAY,
        max_steps=max_steps,
        max_train_minutes=budget_minutes,
        warmup_ratio=DEMO_WARMUP_RATIO,
        max_grad_norm=DEMO_MAX_GRAD_NORM,
        logging_steps=max(1, max_steps // 20),
        save_steps=0,  # a 10-minute demo re-run from the start: no resumable checkpoints
        overwrite_output_dir=True,  # `make demo` run again replaces the model of the run before
        do_final_eval=False,
        report_to="none",
    )
    with _stage("train", timings):
        trainer, _ = run_training(model_args, data_args, training_args, model=model, processor=processor,
                                  collator=collator, train_dataset=data["train"], eval_dataset=data["validation"])
    model = trainer.accelerator.unwrap_model(trainer.model).eval()

    with _stage("evaluate", timings):
        # The harness, as `examples/evaluate_model.py` runs it: UniRES beside the trivial baselines on the same rows.
        evaluation = run_evaluation(None, "unires", str(data_dir or out / "data"), list(EVAL_SPLITS),
                                    segmenter=UniRESSegmenter(model, processor), label="unires",
                                    baselines=BASELINES, batch_size=32)
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))  # readable by evaluate_model.py --compare
    entries = evaluation["splits"]
    metrics = {"options": next(iter(entries.values()))["metrics"]["options"],
               "splits": {split: {"unires": entry["metrics"], **entry["baselines"]}
                          for split, entry in entries.items()}}
    with _stage("overlays", timings):
        for split in EVAL_SPLITS:
            write_overlays(model, processor, data[split], out / "overlays" / split, num=num_overlays)

    # The card written during training had no numbers yet: rewrite it with the table.
    trainer.save_model(eval_results={s: m["unires"] for s, m in metrics["splits"].items()})
    metrics["timings_seconds"] = timings
    metrics["training"] = {"steps": trainer.state.global_step, "steps_planned": max_steps,
                           "seconds_per_step_planned": None if step_seconds is None else round(step_seconds, 4),
                           "batch_size": batch_size, "referents_per_image": referents_per_image,
                           "parameters": sum(p.numel() for p in model.parameters()), "ablation": ablation,
                           "config_overrides": config_overrides}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))

    for split, by_method in metrics["splits"].items():
        print(f"\n## {split}\n")
        print(format_metrics_table(by_method, key_name="method"))
    print("\nstage timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    print(f"\nwritten: {out / 'metrics.json'}, {out / 'evaluation.json'}, {out / 'model'}, {out / 'overlays'}")
    return metrics
