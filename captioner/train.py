"""LoRA fine-tuning of the dense captioner: what of the one training loop (`run_support.training_loop`) is the
captioner's.

``accelerate launch examples/train_captioner.py --coco_dir ... --output_dir ...``; the arguments are the three
dataclasses of :mod:`captioner.arguments` (``--help`` lists them all). The loop gives exact resume, checkpoints
(here of the trainable weights only: the frozen base is loaded again from ``--base_model``), the schedule, the stop
on a non-finite loss and the output-folder claim; this file adds the caption mixture and its reject accounting,
placeholder micro-batches (every row rejected), LoRA, and the adapter's save and push.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader

from run_support.checkpoints import resolve_checkpoint
from run_support.hub import TRACKER_LOG_DIR, push_folder
from run_support.optimization import build_optimizer, build_parameter_groups
from run_support.output_dir import CHECKPOINT_PREFIX, LOCK_FILE
from run_support.rejects import RejectLog
from run_support.run_claim import RunKind, prepare_run
from run_support.training_loop import LoopSettings, TrainingLoop

from .arguments import CaptionerDataArguments, CaptionerModelArguments, CaptionerTrainingArguments
from .box_prompts import box_format_for
from .encoding import IGNORE_INDEX, CaptionCollator, context_length, record_batch_accounting
from .finetune_data import build_caption_mixture, parse_mapping
from .model_card import write_model_card
from .modeling import add_lora, load_base_model

logger = logging.getLogger(__name__)
STATE_FILE = "captioner_training_state.json"
TRACKER_PROJECT = "captioner"  # the tracker's run name: its logs go to output_dir/runs/captioner/
# What a finished run leaves in output_dir (save_pretrained of the PEFT model): an earlier run, for the overwrite rule.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
CAPTIONER_RUN = RunKind(name="captioner training", script="examples/train_captioner.py", state_file=STATE_FILE,
                        run_folders=(), saved_model_files=ADAPTER_FILES)


@dataclass
class TrainResult:
    global_step: int
    losses: list  # (step, mean loss) every logging_steps
    output_dir: str
    model: object = None  # the trained PeftModel (unwrapped), for use right after training
    rejects: RejectLog | None = None  # this process's kept/skipped counts of training rows (closed)
    learning_rates: list = field(default_factory=list)  # (step, learning rate after it) for every step of this run


class NoSupervisedTokensError(RuntimeError):
    """Training would learn nothing: no row yields an answer token to supervise."""


def caption_loss(model, batch: dict) -> tuple[torch.Tensor, bool]:
    """`(loss, counted)` of one micro-batch. A placeholder (every row of the micro-batch rejected) still runs
    forward, so that its backward (at zero) reaches the same gradient synchronisation as every other rank: a rank
    that skipped it would leave the others waiting forever."""
    placeholder = bool(batch.pop("placeholder", False))
    if not placeholder and not (batch["labels"] != IGNORE_INDEX).any():
        raise NoSupervisedTokensError("A batch has no supervised token: every answer token is masked.")
    return model(**batch).loss, not placeholder


def _rank_rejects_path(path: str, accelerator: Accelerator) -> str:
    """One rejects file per process (``rejects.jsonl``, ``rejects.rank1.jsonl``...): ranks never share a file."""
    if accelerator.num_processes == 1 or accelerator.process_index == 0:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.rank{accelerator.process_index}{ext}"


def _data_dirs(data_args: CaptionerDataArguments) -> dict:
    dirs = {"coco_captions": data_args.coco_dir, "visual_genome": data_args.visual_genome_dir,
            "paco": data_args.paco_dir, "partimagenet": data_args.partimagenet_dir}
    return {name: path for name, path in dirs.items() if path}


def find_checkpoint(output_dir: str, which: str) -> str:
    """Resolve ``--resume_from_checkpoint`` ('latest': the newest complete checkpoint, or a folder)."""
    return str(resolve_checkpoint(output_dir, which, STATE_FILE, CAPTIONER_RUN.name, ADAPTER_FILES))


def train(model_args: CaptionerModelArguments, data_args: CaptionerDataArguments, training_args: CaptionerTrainingArguments,
          train_dataset=None) -> TrainResult:
    """Fine-tune LoRA on the caption mixture (or on ``train_dataset`` rows of the caption schema).

    Before anything is loaded, the run is claimed as every run of ours is (`run_support.run_claim.prepare_run`):
    the launch is checked, the main process locks ``output_dir`` (a second run into the folder fails at once,
    naming this one's pid and host), then the checks that can fail, none of which deletes anything: the
    ``--overwrite_output_dir`` rule (a folder holding an earlier run, its checkpoints or its saved adapter, is
    refused unless ``--resume_from_checkpoint`` continues that run or ``--overwrite_output_dir`` replaces it), the
    checkpoint to resume from, and the Hub push. An overwritten run's checkpoints are deleted only once the model and
    data are built, when training starts. The lock is released when training ends, however it ends.
    """
    args = training_args
    accelerator = Accelerator(  # mixed_precision None: the launcher's, `accelerate config`'s or the environment's
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        log_with=args.report_to, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # Tracker logs (TensorBoard's hparams.yml and events) go under output_dir/runs/, which no push uploads.
        project_config=ProjectConfiguration(project_dir=args.output_dir,
                                            logging_dir=os.path.join(args.output_dir, TRACKER_LOG_DIR)),
    )
    prepared = prepare_run(accelerator, args, CAPTIONER_RUN)
    try:
        return _train(model_args, data_args, args, accelerator, train_dataset, prepared)
    finally:
        prepared.release()


class CaptionerTrainer(TrainingLoop):
    """The one loop with the captioner's parts: reject accounting, placeholder micro-batches, the adapter's save."""

    kind = CAPTIONER_RUN
    tracker_project = TRACKER_PROJECT
    progress_description = "captioner LoRA"
    checkpoint_trainable_weights_only = True  # the frozen base is loaded again from --base_model on resume
    record_learning_rates = True  # TrainResult.learning_rates

    def __init__(self, *loop_args, model_args, data_args, args, processor, rejects: RejectLog, weights: dict,
                 **loop_kwargs):
        self.model_args, self.data_args, self.args = model_args, data_args, args
        self.processor, self.rejects, self.weights = processor, rejects, weights
        super().__init__(*loop_args, **loop_kwargs)

    def compute_loss(self, model, batch: dict):
        if "kept_rows" in batch:  # collated in a worker process: its accounting travels with the batch
            record_batch_accounting(self.rejects, {key: batch.pop(key) for key in ("kept_rows", "rejected_rows")})
        rejects = self.rejects
        if rejects.kept == 0 and rejects.skipped >= self.data_args.check_first_rows:
            reasons = ", ".join(f"{reason}: {count}" for reason, count in rejects.reasons.most_common(3))
            raise NoSupervisedTokensError(f"None of the first {rejects.skipped} training rows yields a supervised token "
                                          f"({reasons}); see {rejects.path or 'the rejects log'}.")
        return caption_loss(model, batch)

    def tracker_config(self):
        if not self.args.report_to:
            return None
        return {**asdict(self.model_args), **asdict(self.data_args), **asdict(self.args)}

    def finish(self) -> TrainResult:
        accelerator, args = self.accelerator, self.args
        accelerator.wait_for_everyone()
        self.rejects.close()
        if accelerator.is_main_process:
            unwrapped = accelerator.unwrap_model(self.model)
            unwrapped.save_pretrained(args.output_dir)  # the adapter only (adapter_model.safetensors)
            self.processor.save_pretrained(args.output_dir)
            write_model_card(args.output_dir, self.model_args, self.data_args, args,
                             sorted(_data_dirs(self.data_args)) or ["custom dataset"], self.weights, self.losses,
                             box_format_for(unwrapped), mixed_precision=accelerator.mixed_precision,
                             repo_id=self.prepared.hub_repo_id)
            logger.info("adapter, processor and model card saved to %s (step %d)", os.path.abspath(args.output_dir),
                        self.state.global_step)
            if args.push_to_hub:
                push_adapter_to_hub(args.output_dir, self.prepared.hub_repo_id, token=args.hub_token)
                logger.info("pushed to https://huggingface.co/%s", self.prepared.hub_repo_id)
        return TrainResult(global_step=self.state.global_step, losses=self.losses, output_dir=args.output_dir,
                           model=accelerator.unwrap_model(self.model), rejects=self.rejects,
                           learning_rates=self.learning_rates)


def _train(model_args: CaptionerModelArguments, data_args: CaptionerDataArguments, args: CaptionerTrainingArguments,
           accelerator: Accelerator, train_dataset, prepared) -> TrainResult:
    set_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    rejects_path = data_args.rejects_file or os.path.join(args.output_dir, "rejects.jsonl")
    rejects = RejectLog(_rank_rejects_path(rejects_path, accelerator), stage="captioner_training")

    weights = parse_mapping(data_args.mixture_weights, float)
    if train_dataset is None:
        with accelerator.main_process_first():  # prepare the Arrow cache once
            train_dataset = build_caption_mixture(_data_dirs(data_args), weights, seed=args.seed,
                                                  max_examples_per_source=data_args.max_examples_per_source,
                                                  cache_dir=data_args.cache_dir, rejects_path=rejects.path,
                                                  stopping_strategy=data_args.mixture_stopping_strategy)

    model, processor = load_base_model(model_args.base_model, model_args.torch_dtype, model_args.attn_implementation)
    if args.gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = add_lora(model, model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout,
                     [name.strip() for name in model_args.lora_target_modules.split(",") if name.strip()],
                     model_args.freeze_vision_tower)
    if accelerator.is_main_process:
        model.print_trainable_parameters()

    collator = CaptionCollator(processor, max_length=data_args.max_length or context_length(model), rejects=rejects,
                               box_format=box_format_for(model), max_image_tokens=data_args.max_image_tokens)
    dataloader = DataLoader(train_dataset, batch_size=args.per_device_train_batch_size, shuffle=True,
                            collate_fn=collator, num_workers=args.dataloader_num_workers,
                            generator=torch.Generator().manual_seed(args.seed))
    optimizer = build_optimizer(build_parameter_groups(model, args.learning_rate, args.learning_rate, args.weight_decay),
                                betas=(0.9, 0.999))
    batches = -(-len(dataloader) // accelerator.num_processes)  # per process, as the prepared loader has them
    steps_per_epoch = max(1, -(-batches // args.gradient_accumulation_steps))
    total_steps = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    trainer = CaptionerTrainer(accelerator, model, optimizer, dataloader, LoopSettings.from_args(args, total_steps),
                               prepared=prepared, model_args=model_args, data_args=data_args, args=args,
                               processor=processor, rejects=rejects, weights=weights)
    return trainer.train()


def push_adapter_to_hub(output_dir: str, repo_id: str, token: str | None = None) -> str:
    """Upload adapter, processor and model card (not the resumable checkpoints) to ``repo_id``, which
    :func:`run_support.hub.check_push_access` created before training."""
    push_folder(output_dir, repo_id, token=token, commit_message="Upload dense captioner LoRA adapter",
                ignore_patterns=[f"{CHECKPOINT_PREFIX}*", "*.jsonl", f"{TRACKER_LOG_DIR}/*", LOCK_FILE,
                                 f"{TRACKER_PROJECT}/*"])  # where tracker logs went before runs/, token included
    return repo_id


