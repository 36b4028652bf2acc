"""A peer trained on equal terms: CLIPSeg at the demo's tower size, on the demo's MRES-Synth, for the demo's budget.

The paper compares UniRES with prior RES models (Table 3). At demo scale the comparison is with transformers'
`CLIPSegForImageSegmentation`, trained from scratch exactly as `make demo` trains UniRES except for the model:

- the same data (`unires.demo.build_demo_data`, or the demo's folder), the same tokenizer recipe (a CLIP BPE trained
  on the training sentences, 17 tokens), the same sampling (`MRESTrainingCollator.sample`: 16 referents per image,
  one sentence each, a pure function of seed, epoch and image), the same batch shape (4 images x up to 16
  expressions), the same optimiser (AdamW, learning rate 1e-3, weight decay 5e-4, cosine with 5% warm-up, gradient
  clipping at 1.0) and the same wall-clock budget (a probe of real steps plans the count, `StepReplanner` keeps it);
- CLIP towers of the demo's size (ViT 4x128 with 8x8 patches at 96x96, text 3x128), with CLIPSeg's own decoder
  (FiLM conditioning, `reduce_dim` 64, taps of vision layers 1, 2, 3 as ViT-B's 3, 6, 9, the "refined" transposed
  convolutions) and its own loss (binary cross-entropy on the logits, what its forward computes with `labels`), its
  decoder initialised as the original CLIPSeg code does (`reset_decoder_init`);
- CLIPSeg pairs one image with one expression, so each of the 64 (image, expression) pairs of a step runs the vision
  tower: the model's design, and what the equal time budget charges it for.

With 8x8 patches the refined decoder's two transposed convolutions (kernel patch/4 each) give 48x48 logits for the
96x96 input; the labels are the masks area-averaged to 48x48 (soft targets), and evaluation resizes the logits
bilinearly to the original size, as for the released 352x352 checkpoints. The model is evaluated with the harness
(`CLIPSegSegmenter`, threshold 0.35 as UniRES).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from torch.utils.data import DataLoader

from dataset_scripts.load import load_mres_dataset
from dataset_scripts.masks import decode_mask
from modeling_unires.tokenization_local import build_clip_tokenizer
from run_support.budget import measure_step_seconds, steps_for_budget
from run_support.optimization import build_optimizer, build_parameter_groups
from run_support.run_claim import RunKind, prepare_run
from run_support.training_loop import LoopSettings, TrainingLoop

from ..demo import build_demo_data
from ..demo_recipe import (
    DEMO_BATCH_SIZE,
    DEMO_CONFIG,
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
from ..evaluation.harness import evaluate_segmenter
from ..evaluation.metrics import MRESMetricOptions
from ..evaluation.segmenters import CLIPSegSegmenter
from ..training.arguments import UniRESTrainingArguments
from ..training.collator import MRESTrainingCollator
from ..training.trainer import build_accelerator
from ..training.scratch import all_sentences

TEXT_MAX_LENGTH = 17  # the demo's (UniRESConfig default; the paper's for RefCOCO-style data)
VOCAB_SIZE = 1200  # prepare_from_scratch's


def _text_ids(tokenizer) -> dict:
    return dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def clipseg_config(tokenizer=None, image_size: int = 32, patch_size: int = 8, hidden_size: int = 32, layers: int = 2,
                   text_hidden_size: int = 32, text_layers: int = 2, heads: int = 2, intermediate_size: int = 64,
                   reduce_dim: int = 16, projection_dim: int = 32, refined: bool = True, text_max_length: int = 77):
    """A `CLIPSegConfig` of the given tower sizes; `extract_layers` are the vision layers CLIPSeg taps (its 3 of
    ViT-B's 12, 3 6 9, scaled: 1 2 3 for 4 layers)."""
    from transformers import CLIPSegConfig

    text = dict(hidden_size=text_hidden_size, intermediate_size=text_hidden_size * intermediate_size // hidden_size,
                num_hidden_layers=text_layers, num_attention_heads=heads, max_position_embeddings=text_max_length)
    if tokenizer is not None:
        text.update(_text_ids(tokenizer))
    vision = dict(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=layers,
                  num_attention_heads=heads, image_size=image_size, patch_size=patch_size)
    extract = tuple(layers * k // 4 for k in (1, 2, 3)) if layers >= 4 else tuple(range(layers))
    return CLIPSegConfig(text_config=text, vision_config=vision, projection_dim=projection_dim, reduce_dim=reduce_dim,
                         extract_layers=extract, use_complex_transposed_convolution=refined and patch_size >= 4,
                         decoder_num_attention_heads=heads, decoder_intermediate_size=reduce_dim * 2)


def clipseg_processor(tokenizer, image_size: int):
    from transformers import CLIPSegProcessor, ViTImageProcessor

    image_processor = ViTImageProcessor(size={"height": image_size, "width": image_size}, image_mean=OPENAI_CLIP_MEAN,
                                        image_std=OPENAI_CLIP_STD, resample=3)
    return CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)


def demo_clipseg_config(tokenizer, reduce_dim: int = 64, refined: bool = True):
    """CLIPSeg with the CLIP towers of the demo's UniRES (`DEMO_CONFIG`) and CLIPSeg's decoder."""
    vision, text = DEMO_CONFIG["vision_config"], DEMO_CONFIG["text_config"]
    config = clipseg_config(
        tokenizer, image_size=vision["image_size"], patch_size=vision["patch_size"], hidden_size=vision["hidden_size"],
        layers=vision["num_hidden_layers"], text_hidden_size=text["hidden_size"], text_layers=text["num_hidden_layers"],
        heads=vision["num_attention_heads"], intermediate_size=vision["intermediate_size"], reduce_dim=reduce_dim,
        projection_dim=vision["hidden_size"], refined=refined, text_max_length=TEXT_MAX_LENGTH,
    )
    config.decoder_intermediate_size = 2048  # CLIPSeg's default decoder (rd64: 64 wide, 4 heads, MLP 2048)
    config.decoder_num_attention_heads = 4
    return config


def reset_decoder_init(model) -> None:
    """Give CLIPSeg's decoder projections and convolutions PyTorch's default initialisation, as the original CLIPSeg
    code has them. transformers' `CLIPSegConfig` has no top-level `initializer_range`, so `_init_weights` draws the
    FiLM, reduce and (transposed) convolution weights from N(0, 1): a from-scratch model then starts with logits of
    standard deviation about 400 (the released checkpoints load these weights, so nothing else notices)."""
    decoder = model.decoder
    modules = [decoder.film_mul, decoder.film_add, *decoder.reduces, *decoder.transposed_convolution.modules()]
    for module in modules:
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.reset_parameters()


def logits_size(config) -> int:
    """Side of CLIPSeg's logits: the patch grid times the decoder's upsampling."""
    vision = config.vision_config
    grid = vision.image_size // vision.patch_size
    return grid * (vision.patch_size // 4) ** 2 if config.use_complex_transposed_convolution else grid * vision.patch_size


class CLIPSegTrainingCollator:
    """MRES rows → a CLIPSeg batch: one row per (image, expression) pair, sampled as the UniRES collator samples."""

    def __init__(self, processor, label_size: int, referents_per_image: int = DEMO_REFERENTS_PER_IMAGE, seed: int = 0):
        self.processor = processor
        self.label_size = int(label_size)
        self.sampler = MRESTrainingCollator(processor, referents_per_image, seed=seed)  # its sampling only

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __call__(self, rows):
        images, image_rows, texts, masks = [], [], [], []
        for row in rows:
            pairs = self.sampler.sample(row)
            if not pairs:
                continue
            images.append(row["image"].convert("RGB"))
            for referent, sentence in pairs:
                image_rows.append(len(images) - 1)
                texts.append(sentence)
                masks.append(decode_mask(referent["mask"]))
        if not texts:
            raise ValueError(f"no trainable referent in the batch of images {[r['image_id'] for r in rows]}")
        pixel_values = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        text = self.processor.tokenizer(texts, padding=True, truncation=True, max_length=TEXT_MAX_LENGTH,
                                        return_tensors="pt")
        labels = torch.from_numpy(np.stack([m.astype(np.float32) for m in masks]))[:, None]
        labels = F.interpolate(labels, size=(self.label_size, self.label_size), mode="area")[:, 0]
        return {"pixel_values": pixel_values[torch.tensor(image_rows)], "input_ids": text["input_ids"],
                "attention_mask": text["attention_mask"], "labels": labels}


CLIPSEG_RUN = RunKind(name="the CLIPSeg baseline", script="examples/ablate.py", run_folders=())


class CLIPSegBaselineTrainer(TrainingLoop):
    """The one loop (`TrainingLoop`) for CLIPSeg: its loss is the model's own; the run saves model and processor."""

    tracker_project = "clipseg"
    kind = CLIPSEG_RUN
    progress_description = "CLIPSeg"

    def __init__(self, *loop_args, processor, **loop_kwargs):
        self.processor = processor
        super().__init__(*loop_args, **loop_kwargs)

    def finish(self):
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            model.save_pretrained(self.output_dir)
            self.processor.save_pretrained(self.output_dir)
        self.accelerator.wait_for_everyone()


def train_clipseg_baseline(
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
    weight_decay: float = DEMO_WEIGHT_DECAY,
    warmup_ratio: float = DEMO_WARMUP_RATIO,
    max_grad_norm: float = DEMO_MAX_GRAD_NORM,
    seed: int = 0,
    eval_splits=EVAL_SPLITS,
    progress: bool = True,
) -> dict:
    """Train CLIPSeg as the demo trains UniRES (same data, batch shape, optimiser and budget), evaluate it with the
    harness; writes `model/` and `metrics.json` to `output_dir` and returns the metrics."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    start = time.perf_counter()
    if data_dir:
        data = {split: load_mres_dataset([str(data_dir)], split) for split in DEMO_SPLITS}
    else:
        data = build_demo_data(out / "data", num_train=num_train, num_eval=num_eval, seed=seed)
    tokenizer = build_clip_tokenizer(all_sentences(data["train"]), vocab_size=VOCAB_SIZE,
                                     model_max_length=TEXT_MAX_LENGTH)
    config = demo_clipseg_config(tokenizer)
    processor = clipseg_processor(tokenizer, config.vision_config.image_size)
    timings["data and tokenizer"] = round(time.perf_counter() - start, 1)

    from transformers import CLIPSegForImageSegmentation

    set_seed(seed)
    model = CLIPSegForImageSegmentation(config)
    reset_decoder_init(model)
    collator = CLIPSegTrainingCollator(processor, logits_size(config), referents_per_image, seed=seed)
    start = time.perf_counter()
    probe_rows = data["train"].select(range(min(64, len(data["train"]))))
    step_seconds = measure_step_seconds(model, collator, probe_rows, batch_size, steps=10,
                                        max_grad_norm=max_grad_norm)
    budget_seconds = None if max_steps else train_minutes * 60
    planned = max_steps or steps_for_budget(budget_seconds, step_seconds)
    timings["plan the training budget"] = round(time.perf_counter() - start, 1)
    print(f"    CLIPSeg: {step_seconds:.3f} s/step → {planned} steps planned"
          + (f" (budget {train_minutes:g} min)" if budget_seconds else " (fixed)"), flush=True)

    args = UniRESTrainingArguments(  # the demo's options, as UniRES trains (the flags both share)
        output_dir=str(out / "model"), seed=seed, per_device_train_batch_size=batch_size, learning_rate=learning_rate,
        weight_decay=weight_decay, max_steps=planned, max_train_minutes=train_minutes if budget_seconds else None,
        warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm, logging_steps=max(1, planned // 20), save_steps=0,
        overwrite_output_dir=True, report_to="none", disable_progress_bar=not progress)
    accelerator = build_accelerator(args)
    trainer = CLIPSegBaselineTrainer(
        accelerator, model,
        build_optimizer(build_parameter_groups(model, learning_rate, learning_rate, weight_decay), betas=(0.9, 0.999)),
        DataLoader(data["train"], batch_size=batch_size, shuffle=True, collate_fn=collator,
                   generator=torch.Generator().manual_seed(seed)),
        LoopSettings.from_args(args, planned), prepared=prepare_run(accelerator, args, CLIPSEG_RUN), collator=collator,
        processor=processor,
    )
    start = time.perf_counter()
    trainer.train()
    timings["train"] = round(time.perf_counter() - start, 1)
    model = accelerator.unwrap_model(trainer.model).eval()
    step, log = trainer.state.global_step, trainer.state.log_history

    start = time.perf_counter()
    segmenter = CLIPSegSegmenter(model, processor, threshold=0.35, batch_size=64)
    options = MRESMetricOptions(threshold=segmenter.threshold)
    metrics = {"options": options.to_dict(), "splits": {}}
    for split in eval_splits:
        metrics["splits"][split] = {"clipseg": evaluate_segmenter(segmenter, data[split], options=options,
                                                                  batch_size=32, progress=progress,
                                                                  what=f"split {split!r}")}
    timings["evaluate"] = round(time.perf_counter() - start, 1)
    metrics["timings_seconds"] = timings
    metrics["training"] = {"steps": step, "steps_planned": planned, "seconds_per_step_planned": round(step_seconds, 4),
                           "batch_size": batch_size, "referents_per_image": referents_per_image,
                           "parameters": sum(p.numel() for p in model.parameters()),
                           "label_size": logits_size(config), "log": log,
                           "budget_minutes": train_minutes if budget_seconds else None}
    metrics["segmenter"] = segmenter.conventions()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def run_clipseg_comparison(
    output_dir,
    *,
    train_minutes: float = 10.0,
    max_steps: Optional[int] = None,
    num_train: int = DEMO_NUM_TRAIN,
    num_eval: int = DEMO_NUM_EVAL,
    seed: int = 0,
    eval_splits=EVAL_SPLITS,
    progress: bool = True,
) -> dict:
    """UniRES (`run_demo`, the `make demo` recipe) and CLIPSeg (`train_clipseg_baseline`) on the same MRES-Synth data
    for the same budget, then both scored by the harness (`run_evaluation`, dataset identity and conventions included).

    Writes `data/`, `unires/`, `clipseg/`, `results/{unires,clipseg}.json` and `comparison.md`; returns
    `{"results": {name: result}, "table": markdown}`.
    """
    from ..demo import run_demo
    from ..evaluation.harness import compare_table, run_evaluation

    out = Path(output_dir)
    build_demo_data(out / "data", num_train=num_train, num_eval=num_eval, seed=seed)
    run_demo(out / "unires", data_dir=out / "data", train_minutes=train_minutes, max_steps=max_steps, seed=seed,
             num_overlays=0)
    train_clipseg_baseline(out / "clipseg", data_dir=out / "data", train_minutes=train_minutes, max_steps=max_steps,
                           seed=seed, eval_splits=(), progress=progress)
    results = {}
    for name, model_type in (("unires", "unires"), ("clipseg", "clipseg")):
        result = run_evaluation(str(out / name / "model"), model_type, str(out / "data"), list(eval_splits),
                                label=f"{name} (seed {seed})", batch_size=32, progress=progress)
        result["training"] = json.loads((out / name / "metrics.json").read_text())["training"]
        results[name] = result
        (out / "results").mkdir(parents=True, exist_ok=True)
        (out / "results" / f"{name}.json").write_text(json.dumps(result, indent=2))
    steps = ", ".join(f"{name} {r['training']['steps']} steps" for name, r in results.items())
    budget = f"{train_minutes:g} min each" if not max_steps else f"{max_steps} steps each (fixed, not a time budget)"
    table = f"Budget: {budget}; trained {steps}.\n\n" + compare_table(list(results.values()))
    (out / "comparison.md").write_text(table + "\n")
    return {"results": results, "table": table}
