"""`run_training`: from parsed arguments to a trained, saved, evaluated UniRES.

`examples/train.py` is a thin wrapper around this function, so a user can also call it
from Python (and the tests do).
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from accelerate.utils import set_seed

from dataset_scripts.load import load_mres_dataset
from modeling_unires import UniRESConfig, UniRESModel, UniRESProcessor
from run_support.run_claim import prepare_run

from .arguments import DataArguments, ModelArguments, UniRESTrainingArguments
from .collator import MRESTrainingCollator
from .finetune import apply_finetune, count_parameters, require_peft
from .trainer import UNIRES_RUN, UniRESTrainer, build_accelerator

logger = logging.getLogger(__name__)


def build_model(model_args: ModelArguments) -> UniRESModel:
    """A UniRES model from a UniRES checkpoint, a CLIP checkpoint or a config."""
    overrides = model_args.parsed_overrides()
    if model_args.ablation:
        overrides.update(UniRESConfig.ablation_kwargs(model_args.ablation, option="--ablation"))
    if model_args.attn_implementation:
        overrides["attn_implementation"] = model_args.attn_implementation
    sources = [s for s in (model_args.model_name_or_path, model_args.clip_name_or_path, model_args.config_name) if s]
    if len(sources) != 1:
        raise ValueError(
            "give exactly one of --model_name_or_path (UniRES checkpoint), --clip_name_or_path (CLIP "
            f"checkpoint) or --config_name (train from scratch); got {len(sources)}: {sources}"
        )
    if model_args.model_name_or_path:
        return UniRESModel.from_pretrained(model_args.model_name_or_path, **overrides)
    if model_args.clip_name_or_path:
        return UniRESModel.from_clip(model_args.clip_name_or_path, **overrides)
    attn = overrides.pop("attn_implementation", None)
    config = UniRESConfig.from_pretrained(model_args.config_name, **overrides)
    if attn:
        config._attn_implementation = attn
    return UniRESModel(config)


def build_processor(model_args: ModelArguments, model: UniRESModel) -> UniRESProcessor:
    """The processor saved with the checkpoint, or one assembled for a CLIP checkpoint."""
    source = model_args.processor_name_or_path or model_args.model_name_or_path
    if source:
        return UniRESProcessor.from_pretrained(source)
    if model_args.clip_name_or_path:
        return UniRESProcessor.from_clip(model_args.clip_name_or_path, config=model.config)
    raise ValueError("training from a config needs --processor_name_or_path (a saved UniRESProcessor)")


def run_training(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: UniRESTrainingArguments,
    *,
    config: Optional[UniRESConfig] = None,
    model: Optional[UniRESModel] = None,
    processor: Optional[UniRESProcessor] = None,
    collator: Optional[MRESTrainingCollator] = None,
    train_dataset=None,
    eval_dataset=None,
) -> tuple[UniRESTrainer, dict]:
    """Train, evaluate and save. Returns (trainer, metrics).

    What is not passed in is built from the arguments: the model (from `config` when given, a new model with
    fresh weights) and processor from `model_args`, the collator from `data_args`, the datasets from
    `data_args.dataset`. A caller that already holds a config, a model or a collator (the demo, a notebook)
    passes it and nothing is built twice or read back from disk.

    Before anything is built, the output folder is claimed (its lock; the `--overwrite_output_dir` rule) and a
    `--push_to_hub` is checked, so that a run that cannot finish fails in seconds.

    `model_args.finetune` says what trains (`unires.training.finetune`): full, frozen_towers or lora; it is applied
    to the model once built (or as passed in).
    """
    if model is not None and config is not None:
        raise ValueError("pass a model or a config to run_training, not both")
    _check_finetune(model_args, model, training_args)
    accelerator = build_accelerator(training_args)
    prepared = prepare_run(accelerator, training_args, UNIRES_RUN)
    try:
        return _build_and_train(model_args, data_args, training_args, accelerator, prepared, config=config,
                                model=model, processor=processor, collator=collator, train_dataset=train_dataset,
                                eval_dataset=eval_dataset)
    finally:
        prepared.release()


def _build_and_train(model_args, data_args, training_args, accelerator, prepared, *, config, model, processor,
                     collator, train_dataset, eval_dataset):
    set_seed(training_args.seed)
    if model is None:
        model = UniRESModel(config) if config is not None else build_model(model_args)
    if processor is None:
        processor = build_processor(model_args, model)
    num_parameters = sum(p.numel() for p in model.parameters())
    model = apply_finetune(model, model_args)
    # An own-data folder is built (every row checked) into the datasets cache: once, by the main process, which the
    # others then read (as the captioner's mixture is prepared).
    with accelerator.main_process_first():
        if train_dataset is None:
            train_dataset = load_mres_dataset(
                data_args.dataset,
                data_args.train_split,
                streaming=data_args.streaming,
                weights=data_args.dataset_weights,
                seed=training_args.seed,
            )
        if eval_dataset is None and (data_args.eval_dataset or data_args.dataset) and data_args.eval_split:
            name = data_args.eval_dataset or data_args.dataset[0]
            eval_dataset = load_mres_dataset([name], data_args.eval_split)
    trainer = UniRESTrainer(
        model,
        processor,
        training_args,
        data_args,
        train_dataset,
        eval_dataset=eval_dataset,
        collator=collator,
        model_card_info={
            "base_model": model_args.base_model_id or model_args.model_name_or_path or model_args.clip_name_or_path,
            "num_parameters": num_parameters,
            "finetune": _finetune_facts(model_args, model),
        },
        accelerator=accelerator,
        prepared=prepared,
    )
    metrics = trainer.train()
    return trainer, metrics


def _check_finetune(model_args: ModelArguments, model, training_args=None) -> None:
    """Refuse, before the output folder is claimed, a `--finetune lora` that could not save a loadable adapter, or
    whose push would name a folder of this machine as its base (no one else could load it, and the path would be
    uploaded)."""
    if getattr(model_args, "finetune", "full") != "lora":
        return
    require_peft()
    base = model_args.model_name_or_path or getattr(model, "name_or_path", "")
    if not base:
        raise ValueError("--finetune lora trains an adapter on a saved UniRES checkpoint, which the adapter names as "
                         "its base: start from one with --model_name_or_path (a folder or Hub id), not from "
                         "--clip_name_or_path or --config_name")
    if getattr(training_args, "push_to_hub", False) and os.path.isdir(base) and not model_args.base_model_id:
        raise ValueError(f"--finetune lora --push_to_hub: the adapter would name the local folder {base} as its base "
                         "(adapter_config.json's base_model_name_or_path), which no one who downloads it can load: "
                         "pass --base_model_id org/name (the base's Hub id), or fine-tune from the Hub id itself")


def _finetune_facts(model_args: ModelArguments, model) -> Optional[dict]:
    """What the model card says of the fine-tuning: the way, what trains, and the LoRA options (None for a model
    trained in full from a config: nothing was fine-tuned)."""
    way = getattr(model_args, "finetune", "full")
    if way == "full" and not (model_args.model_name_or_path or model_args.clip_name_or_path):
        return None
    trainable, total = count_parameters(model)
    facts = {"way": way, "trainable_parameters": trainable, "total_parameters": total}
    if facts["way"] == "lora":
        config = model.peft_config["default"]
        facts.update(r=config.r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                     target_modules=model_args.lora_target_modules or "default",
                     base_model=config.base_model_name_or_path)
    return facts
