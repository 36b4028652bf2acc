"""The one training loop, on Accelerate: UniRES (`unires.training.UniRESTrainer`), the dense captioner
(`captioner.train`) and the CLIPSeg baseline (`unires.baselines.clipseg`) each subclass `TrainingLoop` and say only
what is theirs: how a batch becomes a loss, what else an epoch starts with, what happens after a step, what the run
saves at the end. Why our own loop rather than transformers' `Trainer`: README.md, "Training" ("One loop for
every trainer").

What every run gets from it, under the same tests:
- exact resume, data order included (`checkpoint-N`: Accelerate's state, the sampler's epoch and position, and
  `RunState`; a larger `--max_steps` on resume trains on, the schedule recomputed for the new length, warm-up kept);
- checkpoints written whole or not at all (the state file last, once every process has written its part), only
  the newest `save_total_limit` kept, and optionally only the trainable weights (a LoRA run);
- the learning-rate schedule over the run's current length (which a wall-clock budget re-plans: `StepReplanner`);
- a loss that is not finite stops the run, naming the step and the batch;
- the output folder claimed and the Hub checked before anything is built (`run_support.run_claim.prepare_run`,
  called by each trainer), its lock released however the run ends; an overwritten run's past removed only when
  training starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from .budget import StepReplanner
from .checkpoints import complete_checkpoints, resolve_checkpoint
from .hub import without_secrets
from .main_process import on_main_process
from .run_claim import PreparedRun, RunKind

logger = logging.getLogger(__name__)

SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")


def schedule_factor(kind: str, step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning-rate multiplier after `step` optimisation steps: transformers' schedules of these names (linear
    warm-up, then `kind`), computed over `total_steps`, which may change during a run (a re-planned budget, a longer
    resume) where a schedule object built once could not follow."""
    if kind not in SCHEDULES:
        raise ValueError(f"lr_scheduler_type {kind!r} is not supported: choose one of {', '.join(SCHEDULES)}")
    if kind == "constant":
        return 1.0
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    if kind == "constant_with_warmup":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class RunState:
    """What, besides Accelerate's state, a checkpoint needs for an exact resume.

    The run's shape is kept too, so that a resume can tell a new length (train on) from the same one (continue
    exactly) and warn when it runs on another number of processes or another effective batch.
    """

    global_step: int = 0
    planned_steps: int = 0  # the run's length, as last (re-)planned
    epoch: int = 0
    batches_seen_in_epoch: int = 0
    log_history: list = field(default_factory=list)
    requested_steps: int = 0  # the length the arguments asked for (--max_steps, or from the epochs), before re-planning
    warmup_steps: int = 0
    num_processes: int = 0
    per_device_train_batch_size: int = 0
    gradient_accumulation_steps: int = 0
    position_recorded: bool = True  # False for a checkpoint written before epoch and position were kept

    @property
    def effective_batch(self) -> int:
        return self.per_device_train_batch_size * self.num_processes * self.gradient_accumulation_steps

    def save(self, folder: Path, state_file: str) -> None:
        values = asdict(self)
        values.pop("position_recorded")
        (Path(folder) / state_file).write_text(json.dumps(values, indent=2))

    @classmethod
    def load(cls, folder: Path, state_file: str) -> "RunState":
        values = json.loads((Path(folder) / state_file).read_text())
        if "planned_steps" not in values and "total_steps" in values:  # the captioner's checkpoints before the one loop
            values["planned_steps"] = values["requested_steps"] = values["total_steps"]
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in values.items() if k in known})  # older checkpoints lack the newer fields
        state.position_recorded = "epoch" in values
        return state


@dataclass
class LoopSettings:
    """The loop's options, with transformers' `TrainingArguments` names; `from_args` reads them from any trainer's
    arguments (each trainer's dataclass has the ones it offers; the others keep these defaults)."""

    output_dir: str
    max_steps: int  # the length asked for (from --max_steps or the epochs); a budget re-plans it
    per_device_train_batch_size: int
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    logging_steps: int = 10
    save_steps: int = 0
    save_total_limit: Optional[int] = None
    max_train_minutes: Optional[float] = None
    resume_from_checkpoint: Optional[str] = None
    disable_progress_bar: bool = False
    asked_for: str = ""  # how the command line asked for `max_steps`, in messages: "--max_steps 6", "40 steps (...)"

    @classmethod
    def from_args(cls, args, max_steps: int) -> "LoopSettings":
        values = {f.name: getattr(args, f.name) for f in fields(cls)
                  if f.name not in ("max_steps", "asked_for") and hasattr(args, f.name)}
        asked = (f"--max_steps {max_steps}" if getattr(args, "max_steps", 0) > 0
                 else f"{max_steps} steps (--num_train_epochs {getattr(args, 'num_train_epochs', 0):g})")
        return cls(max_steps=max_steps, asked_for=asked, **values)


class TrainingLoop:
    """Trains `model` with `optimizer` on `train_dataloader` under `accelerator`, for `settings.max_steps` steps.

    Subclasses override the hooks: `compute_loss` (default: `model(**batch).loss`), `describe_batch` (what a
    non-finite loss names), `after_step`, `tracker_config` and `finish` (what the run saves and
    returns). Class attributes name the run's kind (`kind`: its state file, folders, saved files), its tracker project
    and progress bar, and whether checkpoints hold only the trainable weights (`checkpoint_trainable_weights_only`,
    for a LoRA run: the frozen base is loaded again from where the run began).

    Args:
        accelerator: the run's `Accelerator`.
        model, optimizer: not yet prepared; the loop prepares them.
        train_dataloader: prepared (sharded per process) by the loop unless `shard_dataloader=False` (a streaming
            dataset already split per process, whose `set_epoch` the loop calls: pass it as `streaming_dataset`).
        settings: `LoopSettings`.
        prepared: the claimed output folder (`run_support.run_claim.prepare_run`), released when training ends.
        collator: its `set_epoch(epoch)` is called at each epoch's start, when it has one (per-epoch sampling).
    """

    kind: RunKind  # each trainer names its own (state file, folders, saved files, script)
    tracker_project = "run"
    progress_description = "training"
    checkpoint_trainable_weights_only = False
    record_learning_rates = False  # keep (step, rate) of every step in `learning_rates` (the captioner's TrainResult)

    def __init__(self, accelerator, model, optimizer, train_dataloader, settings: LoopSettings, *,
                 prepared: PreparedRun, shard_dataloader: bool = True, streaming_dataset=None, collator=None):
        if not isinstance(getattr(self, "kind", None), RunKind):
            raise TypeError(f"{type(self).__name__} must name its run kind: a class attribute `kind = RunKind(...)`")
        self.accelerator = accelerator
        self.settings = settings
        self.prepared = prepared
        self.collator = collator
        self.streaming_dataset = streaming_dataset
        self.output_dir = Path(settings.output_dir)
        self.max_steps = settings.max_steps
        self.state = RunState(
            requested_steps=self.max_steps,
            num_processes=accelerator.num_processes,
            per_device_train_batch_size=settings.per_device_train_batch_size,
            gradient_accumulation_steps=settings.gradient_accumulation_steps,
        )
        self.clock = time.perf_counter  # the budget's clock (replaceable in tests)
        self.replanner = (StepReplanner(settings.max_train_minutes * 60, self.max_steps)
                          if settings.max_train_minutes else None)
        self.warmup_steps = settings.warmup_steps or int(math.ceil(settings.warmup_ratio * self.max_steps))
        self.state.warmup_steps = self.warmup_steps
        schedule_factor(settings.lr_scheduler_type, 0, 0, 1)  # an unknown schedule fails now, not after the build
        # Stepped once per optimisation step by this loop (not by Accelerate, which would step it once per process),
        # and checkpointed through register_for_checkpointing.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self._learning_rate_factor)
        accelerator.register_for_checkpointing(self.scheduler)
        if shard_dataloader:
            self.model, self.optimizer, self.train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
        else:
            self.model, self.optimizer = accelerator.prepare(model, optimizer)
            self.train_dataloader = train_dataloader
        self.streaming = not shard_dataloader
        self.learning_rates: list[tuple[int, float]] = []  # (step, rate after it), this process's run only
        if self.checkpoint_trainable_weights_only:
            _checkpoint_trainable_weights_only(accelerator)

    # ------------------------------------------------------------------------------------------------- the hooks
    def compute_loss(self, model, batch: dict) -> tuple[torch.Tensor, bool]:
        """`(loss, counted)` of one micro-batch. A batch with nothing to learn (every row rejected) still runs forward
        and backward, so that every process reaches the same gradient synchronisation: return `(loss, False)` and
        the loop backpropagates zero and leaves it out of the logged loss."""
        return model(**batch).loss, True

    def describe_batch(self, batch: dict) -> str:
        """How a non-finite loss names its batch, e.g. " (images [...])"."""
        return ""

    def after_step(self, step: int) -> None:
        """Called after each optimisation step, its checkpoint included (periodic evaluation)."""

    def tracker_config(self) -> Optional[dict]:
        """The hyper-parameters the trackers record (credentials are dropped before they see them)."""
        return None

    def finish(self):
        """After the last step: evaluate, save, push; returns what `train` returns."""
        return None

    # --------------------------------------------------------------------------------------------------- schedule
    def _learning_rate_factor(self, step: int) -> float:
        return schedule_factor(self.settings.lr_scheduler_type, step, self.warmup_steps, self.max_steps)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        folder = self.output_dir / f"checkpoint-{self.state.global_step}"
        self.accelerator.save_state(str(folder))
        # The state file marks a complete checkpoint ('latest' ignores folders without it): written once every
        # process has written its part, so a run killed mid-save never leaves a checkpoint that looks whole.
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.state.save(folder, self.kind.state_file)
            limit = self.settings.save_total_limit
            if limit:
                for old in complete_checkpoints(self.output_dir, self.kind.state_file)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return folder

    def _resume(self, checkpoint: str) -> None:
        folder = resolve_checkpoint(self.output_dir, checkpoint, self.kind.state_file, self.kind.name,
                                    self.kind.saved_model_files)
        saved = RunState.load(folder, self.kind.state_file)
        requested, step = self.max_steps, saved.global_step
        planned = saved.planned_steps or requested
        # Older checkpoints did not record what was asked for: their plan stands in for it.
        if requested == (saved.requested_steps or planned):
            self.max_steps = planned  # the same run: continue exactly, re-planned length included
        else:
            asked = self.settings.asked_for or f"{requested} steps"
            if requested > step:
                self._say(logging.INFO, "resuming at step %d of a %d-step run; training on to %s (%s schedule "
                          "recomputed for %d steps, warm-up kept at %d)", step, planned, asked,
                          self.settings.lr_scheduler_type, requested, saved.warmup_steps or self.warmup_steps)
            else:
                self._say(logging.WARNING, "resuming at step %d of a %d-step run, but %s asks for no more steps: "
                          "nothing to train; the model is saved as it is", step, planned, asked)
            self.max_steps = max(requested, step)
        if saved.warmup_steps:
            self.warmup_steps = saved.warmup_steps
        elif not self.settings.warmup_steps:
            self.warmup_steps = int(math.ceil(self.settings.warmup_ratio * planned))
        if self.replanner is not None:
            self.replanner.planned_steps = self.max_steps
        now = self.state
        if saved.num_processes and (saved.num_processes, saved.effective_batch) != (now.num_processes, now.effective_batch):
            self._say(
                logging.WARNING,
                "checkpoint %s was written by %d process(es) with an effective batch of %d (%d per device x %d "
                "processes x %d accumulation); this run has %d process(es) and an effective batch of %d (%d x %d x %d). "
                "Training goes on, but not as the original run would have: the batch (and so the learning rate per "
                "sample) and the order of the remaining data differ.",
                folder, saved.num_processes, saved.effective_batch, saved.per_device_train_batch_size,
                saved.num_processes, saved.gradient_accumulation_steps, now.num_processes, now.effective_batch,
                now.per_device_train_batch_size, now.num_processes, now.gradient_accumulation_steps,
            )
        if not saved.position_recorded and not self.streaming:  # where the data stood, from the step count
            saved.epoch, saved.batches_seen_in_epoch = divmod(
                saved.global_step * self.settings.gradient_accumulation_steps, max(1, len(self.train_dataloader)))
        saved.requested_steps = requested
        saved.planned_steps = self.max_steps
        saved.warmup_steps = self.warmup_steps
        saved.num_processes = now.num_processes
        saved.per_device_train_batch_size = now.per_device_train_batch_size
        saved.gradient_accumulation_steps = now.gradient_accumulation_steps
        self.state = saved
        self.accelerator.load_state(str(folder))
        if self.max_steps != planned:
            # The learning rate of the next step is the new schedule's, not the one the checkpoint stored.
            factor = self._learning_rate_factor(self.scheduler.last_epoch)
            for group, base in zip(self.scheduler.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = base * factor
            self.scheduler._last_lr = [group["lr"] for group in self.scheduler.optimizer.param_groups]
        self._say(logging.INFO, "resumed from %s at step %d of %d", folder, self.state.global_step, self.max_steps)

    def _say(self, level: int, message: str, *args) -> None:
        """Log what every process would say alike (a resume) once, from the main process."""
        if self.accelerator.is_main_process:
            logger.log(level, message, *args)

    # --------------------------------------------------------------------------------------------------- training
    def _epoch_batches(self):
        """Batches of the current epoch, skipping those a resumed checkpoint already consumed."""
        epoch, skip = self.state.epoch, self.state.batches_seen_in_epoch
        if self.collator is not None and hasattr(self.collator, "set_epoch"):
            self.collator.set_epoch(epoch)
        if self.streaming:
            if self.streaming_dataset is not None:
                self.streaming_dataset.set_epoch(epoch)
            batches = iter(self.train_dataloader)
            return islice(batches, skip, None) if skip else batches
        self.train_dataloader.set_epoch(epoch)
        return self.accelerator.skip_first_batches(self.train_dataloader, skip) if skip else self.train_dataloader

    def _to_device(self, batch: dict) -> dict:
        device = self.accelerator.device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def describe_run(self) -> str:
        """What a user needs to see before a long run: processes, batch, precision, length, destination."""
        settings, accelerator = self.settings, self.accelerator
        per_device, processes, accumulation = (settings.per_device_train_batch_size, accelerator.num_processes,
                                               settings.gradient_accumulation_steps)
        push = f", push to https://huggingface.co/{self.prepared.hub_repo_id}" if self.prepared.hub_repo_id else ""
        return (f"world size {processes} ({accelerator.distributed_type.value}, device {accelerator.device}), mixed "
                f"precision {accelerator.mixed_precision}; effective batch {per_device * processes * accumulation} = "
                f"{per_device} per device x {processes} process(es) x {accumulation} accumulation; {self.max_steps} "
                f"steps from step {self.state.global_step} (warm-up {self.warmup_steps}); output_dir "
                f"{self.output_dir.resolve()}{push}")

    def train(self):
        """Train to `max_steps`, then `finish()`; returns what it returns. The output folder's lock is released
        when training ends, however it ends."""
        try:
            return self._train()
        finally:
            self.prepared.release()

    def _train(self):
        settings, accelerator = self.settings, self.accelerator
        # Only now, with every check passed and the model and data built, does an overwritten run's past go.
        on_main_process(accelerator, self.prepared.clear_earlier_run)
        if settings.resume_from_checkpoint:
            self._resume(settings.resume_from_checkpoint)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            logger.info(self.describe_run())
        config = self.tracker_config()
        if config is not None and not accelerator.trackers:
            accelerator.init_trackers(self.tracker_project, config=without_secrets(config))
        bar = tqdm(total=self.max_steps, initial=self.state.global_step, desc=self.progress_description, unit="step",
                   disable=settings.disable_progress_bar or not accelerator.is_local_main_process)
        self.model.train()
        loss_sum, loss_count, started = 0.0, 0, time.perf_counter()
        if self.replanner is not None:
            self.replanner.start(self.clock())
        while self.state.global_step < self.max_steps:
            consumed_any = False
            resumed_at_epoch_end = self.state.batches_seen_in_epoch > 0  # a checkpoint taken after an epoch's last batch
            for batch in self._epoch_batches():
                consumed_any = True
                self.state.batches_seen_in_epoch += 1
                whole = dict(batch)  # what a non-finite loss names, before compute_loss takes keys out
                with accelerator.accumulate(self.model):
                    loss, counted = self.compute_loss(self.model, self._to_device(batch))
                    if counted and not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"loss is {loss.item()} at step {self.state.global_step + 1}{self.describe_batch(whole)}; "
                            "stopping. Lower the learning rate or try --mixed_precision no.")
                    accelerator.backward(loss if counted else loss * 0.0)
                    if accelerator.sync_gradients and settings.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(self.model.parameters(), settings.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                if counted:
                    loss_sum += loss.detach().float().item()
                    loss_count += 1
                if not accelerator.sync_gradients:
                    continue
                self.state.global_step += 1
                step = self.state.global_step
                if self.replanner is not None:
                    self.max_steps = max(step, self.replanner.update(step, self.clock()))
                    bar.total = self.max_steps
                self.state.planned_steps = self.max_steps
                self.scheduler.step()
                if self.record_learning_rates:
                    self.learning_rates.append((step, self.scheduler.get_last_lr()[0]))
                bar.update(1)
                if step % settings.logging_steps == 0 or step == self.max_steps:
                    # The mean over every process's counted micro-batches since the last record.
                    totals = accelerator.reduce(torch.tensor([loss_sum, float(loss_count)], device=accelerator.device),
                                                "sum")
                    if totals[1] > 0:
                        mean_loss = (totals[0] / totals[1]).item()
                        record = {"step": step, "loss": mean_loss, "lr": self.scheduler.get_last_lr()[-1],
                                  "seconds": round(time.perf_counter() - started, 2)}
                        self.state.log_history.append(record)
                        accelerator.log({"train/loss": mean_loss, "train/lr": record["lr"]}, step=step)
                        bar.set_postfix(loss=f"{mean_loss:.4f}")
                        logger.debug("step %d: loss %.4f, lr %.3g", step, mean_loss, record["lr"])
                    loss_sum, loss_count = 0.0, 0
                if settings.save_steps and (step % settings.save_steps == 0 or step >= self.max_steps):
                    # Also at the last step, as transformers' Trainer does: a run can be resumed with a larger
                    # --max_steps to train on.
                    self.save_checkpoint()
                self.after_step(step)
                if step >= self.max_steps:
                    break
            else:
                if not consumed_any and not resumed_at_epoch_end:
                    raise ValueError("the training data yielded no batch: is the split empty?")
                self.state.epoch += 1
                self.state.batches_seen_in_epoch = 0
        bar.close()
        result = self.finish()
        accelerator.end_training()
        return result

    @property
    def losses(self) -> list[tuple[int, float]]:
        """(step, mean loss) of every logging step, as the run's log history holds them."""
        return [(record["step"], record["loss"]) for record in self.state.log_history if "loss" in record]


def _trainable_weights(model) -> dict:
    """The parameters training changes (a LoRA's, a tower trained in full), by unwrapped name."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def _checkpoint_trainable_weights_only(accelerator) -> None:
    """Make `save_state`/`load_state` keep only the trainable weights of the prepared models.

    `save_state` would write each model's whole state dict: a second copy of the frozen base model (about 4 GB for
    Qwen3-VL-2B) in every checkpoint. A resume loads the base model as the run began, so the checkpoint needs only
    what training changed, beside the optimizer, scheduler, RNG and sampler states Accelerate writes. Names are the
    unwrapped model's, so a checkpoint does not depend on the DDP wrapper.
    """
    from accelerate.utils import SAFE_MODEL_NAME

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
    """Load a checkpoint's weights into `model`; they must cover every trainable parameter. (A checkpoint of the
    whole model loads too.)"""
    from safetensors.torch import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: the checkpoint has no model weights file.")
    state = load_file(path)
    missing = sorted(set(_trainable_weights(model)) - set(state))
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} trainable weight(s) of this model (e.g. {missing[0]!r}): was it "
                         "saved with other LoRA options (--lora_r, --lora_target_modules) or other frozen parts "
                         "(--freeze_vision_tower, --finetune)?")
    unexpected = model.load_state_dict(state, strict=False).unexpected_keys
    if unexpected:
        raise ValueError(f"{path} holds {len(unexpected)} weight(s) this model lacks (e.g. {unexpected[0]!r}): was it "
                         "saved from another base model or LoRA configuration?")
