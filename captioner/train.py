"""LoRA fine-tuning of the dense captioner with Accelerate (one GPU, several, several machines).

``accelerate launch examples/train_captioner.py --coco_dir ... --output_dir ...``; the arguments
are the three dataclasses below (``--help`` lists them all).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import SAFE_MODEL_NAME, DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .box_prompts import box_format_for
from .arguments import CaptionerDataArguments, CaptionerModelArguments, CaptionerTrainingArguments
from .encoding import IGNORE_INDEX, CaptionCollator, context_length, record_batch_accounting
from .finetune_data import build_caption_mixture, parse_mapping
from .model_card import write_model_card
from .modeling import add_lora, load_base_model
from run_support.hub import TRACKER_LOG_DIR, check_push_access, push_folder, without_secrets
from run_support.main_process import (check_processes_see_each_other, on_main_process,
                                          warn_if_fewer_processes_than_launched)
from run_support.output_dir import LOCK_FILE, OutputDirLock, check_checkpoints, existing_checkpoints, remove_checkpoints
from run_support.rejects import RejectLog

logger = logging.getLogger(__name__)
CHECKPOINT_PREFIX = "checkpoint-"
STATE_FILE = "captioner_training_state.json"
TRACKER_PROJECT = "captioner"  # the tracker's run name: its logs go to output_dir/runs/captioner/
# What a finished run leaves in output_dir (save_pretrained of the PEFT model): an earlier run, for the overwrite rule.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


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

SCRIPT = "examples/train_captioner.py"  # named in the command a broken CPU launch is told to use


def training_step(model, batch, accelerator: Accelerator):
    """Forward and backward of one micro-batch; returns its loss, or None for a placeholder batch.

    A placeholder (every row of the micro-batch rejected) still runs forward and backward, at zero
    loss, so that every process reaches the same gradient synchronisation: a rank that skipped its
    backward would leave the others waiting forever.
    """
    placeholder = bool(batch.pop("placeholder", False))
    if not placeholder and not (batch["labels"] != IGNORE_INDEX).any():
        raise NoSupervisedTokensError("A batch has no supervised token: every answer token is masked.")
    loss = model(**batch).loss
    accelerator.backward(loss * 0.0 if placeholder else loss)
    return None if placeholder else loss.detach().float()


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


def complete_checkpoints(output_dir: str) -> list[str]:
    """The ``checkpoint-N`` folders of ``output_dir`` whose every process finished writing (they hold the state
    file, written last), oldest first. A folder a kill cut short mid-save is neither resumed from nor counted."""
    return [str(path) for path in existing_checkpoints(output_dir, CHECKPOINT_PREFIX) if (path / STATE_FILE).is_file()]


def find_checkpoint(output_dir: str, which: str) -> str:
    """Resolve ``--resume_from_checkpoint`` ('latest': the newest complete checkpoint, or a folder)."""
    if which != "latest":
        if not os.path.isdir(which):
            found = [os.path.basename(path) for path in complete_checkpoints(output_dir)] if os.path.isdir(output_dir) else []
            raise ValueError(f"--resume_from_checkpoint {which}: no such folder (checkpoints in {output_dir}: "
                             f"{', '.join(found) or 'none'}).")
        if not os.path.isfile(os.path.join(which, STATE_FILE)):
            raise ValueError(f"{which!r} is not a captioner checkpoint (no {STATE_FILE}).")
        return which
    found = complete_checkpoints(output_dir) if os.path.isdir(output_dir) else []
    if not found:
        raise ValueError(f"No complete {CHECKPOINT_PREFIX}* folder in {output_dir!r} to resume from.")
    return found[-1]


def train(model_args: CaptionerModelArguments, data_args: CaptionerDataArguments, training_args: CaptionerTrainingArguments,
          train_dataset=None) -> TrainResult:
    """Fine-tune LoRA on the caption mixture (or on ``train_dataset`` rows of the caption schema).

    Before anything is loaded, the main process claims ``output_dir`` for the whole run, as UniRES training does
    (:mod:`run_support.output_dir`): its lock (a second run into the folder fails at once, naming this one's
    pid and host), then the checks that can fail, none of which deletes anything: the ``--overwrite_output_dir``
    rule (a folder holding an earlier run, its checkpoints or its saved adapter, is refused unless
    ``--resume_from_checkpoint`` continues that run or ``--overwrite_output_dir`` replaces it), the checkpoint to
    resume from, and the Hub push. An overwritten run's checkpoints are deleted only once the model and data are
    built, when training starts. The lock is released when training ends, however it ends.
    """
    args = training_args
    accelerator = Accelerator(  # mixed_precision None: the launcher's, `accelerate config`'s or the environment's
        gradient_accumulation_steps=args.gradient_accumulation_steps, mixed_precision=args.mixed_precision,
        log_with=args.report_to, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        # Tracker logs (TensorBoard's hparams.yml and events) go under output_dir/runs/, which no push uploads.
        project_config=ProjectConfiguration(project_dir=args.output_dir,
                                            logging_dir=os.path.join(args.output_dir, TRACKER_LOG_DIR)),
    )
    # A launch whose processes do not see each other stops here, before rank 0's lock could refuse rank 1 as
    # "another run".
    check_processes_see_each_other(accelerator, script=SCRIPT)
    held = []  # the main process's lock (not broadcast: a lock belongs to the process that took it)

    def claim() -> tuple:
        lock = OutputDirLock.acquire(args.output_dir)
        try:
            earlier = check_checkpoints(args.output_dir, resume_from_checkpoint=args.resume_from_checkpoint,
                                        overwrite_output_dir=args.overwrite_output_dir, remove=False,
                                        prefix=CHECKPOINT_PREFIX, saved_model_files=ADAPTER_FILES)
            if args.resume_from_checkpoint:
                find_checkpoint(args.output_dir, args.resume_from_checkpoint)
            repo_id = None
            if args.push_to_hub:
                repo_id = check_push_access(args.hub_model_id, args.output_dir, token=args.hub_token,
                                            private=args.hub_private_repo)
        except Exception:
            lock.release()
            raise
        warn_if_fewer_processes_than_launched(accelerator, script=SCRIPT)
        held.append(lock)
        return earlier, repo_id

    earlier_checkpoints, hub_repo_id = on_main_process(accelerator, claim)
    try:
        return _train(model_args, data_args, args, accelerator, train_dataset, hub_repo_id, earlier_checkpoints)
    finally:
        for lock in held:
            lock.release()


def _train(model_args: CaptionerModelArguments, data_args: CaptionerDataArguments, args: CaptionerTrainingArguments,
           accelerator: Accelerator, train_dataset, hub_repo_id: str | None, earlier_checkpoints: list) -> TrainResult:
    checkpoint, resumed = None, {}
    if args.resume_from_checkpoint:
        checkpoint = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
        with open(os.path.join(checkpoint, STATE_FILE), encoding="utf-8") as handle:
            resumed = json.load(handle)
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
                            collate_fn=collator, num_workers=args.dataloader_num_workers)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate, weight_decay=args.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(dataloader) / max(1, accelerator.num_processes) / args.gradient_accumulation_steps))
    total_steps = args.max_steps if args.max_steps > 0 else max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    # A resumed run keeps its warm-up; a new length (a larger --max_steps) recomputes the decay for it.
    warmup_steps = resumed.get("warmup_steps", int(args.warmup_ratio * total_steps))
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps,
                              num_training_steps=total_steps)
    # Stepped once per optimizer step by this loop and checkpointed beside the model. A prepared scheduler would
    # be stepped once per process at every step, ending the schedule early on several processes.
    model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    accelerator.register_for_checkpointing(scheduler)
    checkpoint_trainable_weights_only(accelerator)
    if accelerator.is_main_process and earlier_checkpoints:  # --overwrite_output_dir: every check has passed
        remove_checkpoints(args.output_dir, earlier_checkpoints)
    if args.report_to:  # every argument but a credential (--hub_token): trackers write their config to disk
        accelerator.init_trackers(TRACKER_PROJECT, config=without_secrets({**asdict(model_args), **asdict(data_args), **asdict(args)}))

    say = logger.info if accelerator.is_main_process else logger.debug  # what the run says, said once, not once per rank
    global_step, micro_step = 0, 0
    if checkpoint:
        accelerator.load_state(checkpoint)
        global_step = resumed["global_step"]
        micro_step = global_step * args.gradient_accumulation_steps
        planned = resumed.get("total_steps", total_steps)
        if planned != total_steps:
            asked = f"--max_steps {total_steps}" if args.max_steps > 0 else f"{total_steps} steps (--num_train_epochs {args.num_train_epochs:g})"
            say("resuming at step %d of a %d-step run; training on to %s (schedule recomputed for %d steps, "
                "warm-up kept at %d)", global_step, planned, asked, total_steps, warmup_steps)
            if hasattr(scheduler, "lr_lambdas"):  # the next step's rate is the new schedule's, not the stored one
                for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                    group["lr"] = base * factor(scheduler.last_epoch)
                scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
        say("resumed from %s at step %d of %d", checkpoint, global_step, total_steps)
    run_shape = {"total_steps": total_steps, "warmup_steps": warmup_steps, "num_processes": accelerator.num_processes,
                 "per_device_train_batch_size": args.per_device_train_batch_size,
                 "gradient_accumulation_steps": args.gradient_accumulation_steps}

    losses, window, learning_rates = [], [], []
    model.train()
    bar = tqdm(total=total_steps, initial=global_step, desc="captioner LoRA", disable=not accelerator.is_local_main_process)
    epoch = micro_step // len(dataloader)
    while global_step < total_steps:
        dataloader.set_epoch(epoch)
        skip = micro_step - epoch * len(dataloader)  # batches of this epoch already consumed before a resume
        epoch_loader = accelerator.skip_first_batches(dataloader, skip) if skip > 0 else dataloader
        for batch in epoch_loader:
            micro_step += 1
            if "kept_rows" in batch:  # collated in a worker process: its accounting travels with the batch
                record_batch_accounting(rejects, {key: batch.pop(key) for key in ("kept_rows", "rejected_rows")})
            if rejects.kept == 0 and rejects.skipped >= data_args.check_first_rows:
                reasons = ", ".join(f"{reason}: {count}" for reason, count in rejects.reasons.most_common(3))
                raise NoSupervisedTokensError(f"None of the first {rejects.skipped} training rows yields a supervised token "
                                              f"({reasons}); see {rejects.path or 'the rejects log'}.")
            with accelerator.accumulate(model):
                loss = training_step(model, batch, accelerator)
                if loss is not None:
                    window.append(loss.item())
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            learning_rates.append((global_step, scheduler.get_last_lr()[0]))
            bar.update(1)
            if window and (global_step % args.logging_steps == 0 or global_step == total_steps):
                mean_loss = sum(window) / len(window)
                losses.append((global_step, mean_loss))
                window = []
                say("step %d: loss %.4f, lr %.3g", global_step, mean_loss, scheduler.get_last_lr()[0])  # rank 0's, as the tracker's
                if args.report_to:
                    accelerator.log({"loss": mean_loss, "lr": scheduler.get_last_lr()[0]}, step=global_step)
            if args.save_steps and (global_step % args.save_steps == 0 or global_step >= total_steps):
                save_checkpoint(accelerator, args.output_dir, global_step, run_shape, save_total_limit=args.save_total_limit)
            if global_step >= total_steps:
                break
        epoch += 1
    bar.close()

    accelerator.wait_for_everyone()
    rejects.close()
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(args.output_dir)  # the adapter only (adapter_model.safetensors)
        processor.save_pretrained(args.output_dir)
        write_model_card(args.output_dir, model_args, data_args, args, sorted(_data_dirs(data_args)) or ["custom dataset"], weights, losses,
                         box_format_for(unwrapped), mixed_precision=accelerator.mixed_precision, repo_id=hub_repo_id)
        logger.info("adapter, processor and model card saved to %s (step %d)", os.path.abspath(args.output_dir), global_step)
        if args.push_to_hub:
            push_adapter_to_hub(args.output_dir, hub_repo_id, token=args.hub_token)
            logger.info("pushed to https://huggingface.co/%s", hub_repo_id)
    accelerator.end_training()
    return TrainResult(global_step=global_step, losses=losses, output_dir=args.output_dir, model=accelerator.unwrap_model(model),
                       rejects=rejects, learning_rates=learning_rates)


def save_checkpoint(accelerator: Accelerator, output_dir: str, global_step: int, run_shape: dict | None = None,
                    save_total_limit: int | None = None) -> str:
    """Everything needed to resume exactly: the trainable weights (see :func:`checkpoint_trainable_weights_only`),
    optimizer, scheduler, RNG and sampler state, and the run's length and warm-up (so that a resume with a larger
    --max_steps keeps the warm-up and says what it does). Then only the newest ``save_total_limit`` complete
    checkpoints are kept (None or 0: all), as UniRES's trainer does."""
    path = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{global_step}")
    accelerator.save_state(path)
    accelerator.wait_for_everyone()  # the state file marks a checkpoint whose every rank has written its part
    if accelerator.is_main_process:
        with open(os.path.join(path, STATE_FILE), "w", encoding="utf-8") as handle:
            json.dump({"global_step": global_step, **(run_shape or {})}, handle)
        if save_total_limit:
            for old in complete_checkpoints(output_dir)[:-save_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path


def _trainable_weights(model) -> dict:
    """The parameters training changes (LoRA's, and a vision tower trained in full), by unwrapped name."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def checkpoint_trainable_weights_only(accelerator: Accelerator) -> None:
    """Make ``save_state``/``load_state`` keep only the trainable weights of the prepared models.

    ``save_state`` would write each model's whole state dict: a second copy of the frozen base model (about 4 GB for
    Qwen3-VL-2B) in every checkpoint. A resume loads the base model from ``--base_model`` as the run began, so the
    checkpoint needs only what training changed, beside the optimizer, scheduler, RNG and sampler states Accelerate
    writes. Names are the unwrapped model's, so a checkpoint does not depend on the DDP wrapper.
    """
    def save_trainable(models, weights, output_dir):
        for index, (model, _) in enumerate(zip(models, weights)):  # FSDP/DeepSpeed models save themselves: no weights
            weights[index] = _trainable_weights(accelerator.unwrap_model(model))

    def load_trainable(models, input_dir):
        for index, model in enumerate(models):
            name = f"{SAFE_MODEL_NAME}{f'_{index}' if index else ''}.safetensors"
            load_trainable_weights(accelerator.unwrap_model(model), os.path.join(input_dir, name))
        models.clear()  # loaded here: Accelerate's own (strict) load would ask for the frozen weights too

    accelerator.register_save_state_pre_hook(save_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)


def load_trainable_weights(model, path: str) -> None:
    """Load a checkpoint's weights into ``model``; they must cover every trainable parameter. (A checkpoint of the
    whole model, as written before checkpoints held only the trainable weights, loads too.)"""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the checkpoint has no model weights file.")
    state = load_file(path)
    missing = sorted(set(_trainable_weights(model)) - set(state))
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} trainable weight(s) of this model (e.g. {missing[0]!r}): was it "
                         "saved with other --lora_r, --lora_target_modules or --freeze_vision_tower?")
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"{path} holds {len(unexpected)} weight(s) this model lacks (e.g. {unexpected[0]!r}): was it "
                         "saved from another --base_model or LoRA configuration?")


def push_adapter_to_hub(output_dir: str, repo_id: str, token: str | None = None) -> str:
    """Upload adapter, processor and model card (not the resumable checkpoints) to ``repo_id``, which
    :func:`run_support.hub.check_push_access` created before training."""
    push_folder(output_dir, repo_id, token=token, commit_message="Upload dense captioner LoRA adapter",
                ignore_patterns=[f"{CHECKPOINT_PREFIX}*", "*.jsonl", f"{TRACKER_LOG_DIR}/*", LOCK_FILE,
                                 f"{TRACKER_PROJECT}/*"])  # where tracker logs went before runs/, token included
    return repo_id


