"""The UniRES training loop, driven by Accelerate.

One loop serves a laptop CPU, several GPUs and several machines (`accelerate launch`):
AdamW with separate learning rates for the CLIP towers and the new parts, cosine decay with
warm-up, mixed precision, gradient accumulation and clipping, resumable checkpoints,
periodic evaluation, trackers, and a final `save_pretrained` with a model card.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from functools import reduce
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from run_support.hub import TRACKER_LOG_DIR, without_secrets
from run_support.main_process import on_main_process

from ..evaluation.harness import accumulate_metrics
from ..evaluation.segmenters import UniRESSegmenter
from ..evaluation.metrics import MRESMetricAccumulator, MRESMetricOptions, format_metrics_table
from .arguments import DataArguments, UniRESTrainingArguments
from .budget import StepReplanner
from .checkpoints import STATE_FILE, complete_checkpoints, resolve_checkpoint
from .collator import MRESTrainingCollator
from .hub import push_folder
from .model_card import write_model_card
from .optimizer import build_optimizer, build_parameter_groups
from .preflight import PreparedRun, prepare_run

logger = logging.getLogger(__name__)


@dataclass
class TrainerState:
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

    @property
    def effective_batch(self) -> int:
        return self.per_device_train_batch_size * self.num_processes * self.gradient_accumulation_steps

    def save(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "TrainerState":
        path = folder / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {folder} is not a checkpoint written by UniRESTrainer")
        values = json.loads(path.read_text())
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in known})  # older checkpoints lack the newer fields


def build_accelerator(args: UniRESTrainingArguments) -> Accelerator:
    """The run's Accelerator. `mixed_precision` is passed only when given: unset, Accelerate reads the launcher's
    flag, `accelerate config` or ACCELERATE_MIXED_PRECISION. Tracker logs go to `output_dir/runs/` (TensorBoard:
    `runs/unires/`), which a push never uploads; Accelerate's default would be `output_dir` itself."""
    return Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=_trackers(args),
        project_config=ProjectConfiguration(project_dir=str(args.output_dir),
                                            logging_dir=str(Path(args.output_dir) / TRACKER_LOG_DIR)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )


def _trackers(args: UniRESTrainingArguments):
    choice = (args.report_to or "none").lower()
    if choice == "none":
        return None
    if choice == "auto":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return None
        return "tensorboard"
    return choice


class UniRESTrainer:
    """Trains a `UniRESModel` on MRES-schema image rows.

    Args:
        model: a `UniRESModel`.
        processor: its `UniRESProcessor`.
        args: optimisation, checkpointing and publishing options.
        data_args: referent sampling and streaming options.
        train_dataset: a `datasets.Dataset` or `IterableDataset` of MRES rows (already mixed).
        eval_dataset: rows to evaluate on periodically (optional).
        collator: the batch builder; by default an `MRESTrainingCollator` from `data_args` and `args.seed`.
        model_card_info: extra facts for the model card (datasets, base model, ...).
        accelerator: an `Accelerator` built by the caller (default: one from `args`).
        prepared: the run's claimed output folder and checked push (`prepare_run`), when the caller already did it.
    """

    def __init__(
        self,
        model,
        processor,
        args: UniRESTrainingArguments,
        data_args: DataArguments,
        train_dataset,
        eval_dataset=None,
        collator: Optional[MRESTrainingCollator] = None,
        model_card_info: Optional[dict] = None,
        accelerator: Optional[Accelerator] = None,
        prepared: Optional[PreparedRun] = None,
    ):
        self.args = args
        self.data_args = data_args
        self.processor = processor
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.model_card_info = model_card_info or {}
        self.output_dir = Path(args.output_dir)
        self.accelerator = accelerator or build_accelerator(args)
        self.prepared = prepared or prepare_run(self.accelerator, args)
        if args.gradient_checkpointing:
            # transformers 5.2x renamed it; keep working with both names.
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        self.streaming = not hasattr(train_dataset, "__len__")
        self.collator = collator or MRESTrainingCollator(
            processor, data_args.referents_per_image, granularity=data_args.granularity, seed=args.seed
        )
        self.max_steps = self._total_steps()
        self.state = TrainerState(
            requested_steps=self.max_steps,
            num_processes=self.accelerator.num_processes,
            per_device_train_batch_size=args.per_device_train_batch_size,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
        )
        self.clock = time.perf_counter  # the budget's clock (replaceable in tests)
        self.replanner = (
            StepReplanner(args.max_train_minutes * 60, self.max_steps) if args.max_train_minutes else None
        )

        backbone_lr = args.backbone_learning_rate if args.backbone_learning_rate is not None else args.learning_rate
        self.optimizer = build_optimizer(
            build_parameter_groups(model, args.learning_rate, backbone_lr, args.weight_decay),
            betas=(args.adam_beta1, args.adam_beta2),
        )
        self.warmup_steps = args.warmup_steps or int(math.ceil(args.warmup_ratio * self.max_steps))
        self.state.warmup_steps = self.warmup_steps
        # Cosine with linear warm-up over the *current* plan (it may be re-planned to meet a time budget). Stepped
        # once per optimisation step by this loop (not by Accelerate, which would step it once per process), and
        # checkpointed through register_for_checkpointing.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._learning_rate_factor)
        self.accelerator.register_for_checkpointing(self.scheduler)

        dataloader = self._train_dataloader()
        if self.streaming:
            # Already sharded per process by split_dataset_by_node; Accelerate must not shard again.
            self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
            self.train_dataloader = dataloader
        else:
            self.model, self.optimizer, self.train_dataloader = self.accelerator.prepare(
                model, self.optimizer, dataloader
            )

    # ----------------------------------------------------------------------------- setup
    def _learning_rate_factor(self, step: int) -> float:
        """transformers' cosine-with-warm-up factor, for the run's current length."""
        if step < self.warmup_steps:
            return step / max(1, self.warmup_steps)
        progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))

    def _trackers(self):
        return _trackers(self.args)

    def _train_dataloader(self) -> DataLoader:
        args = self.args
        if self.streaming:
            from datasets.distributed import split_dataset_by_node

            dataset = split_dataset_by_node(
                self.train_dataset,
                rank=self.accelerator.process_index,
                world_size=self.accelerator.num_processes,
            ).shuffle(seed=args.seed, buffer_size=self.data_args.shuffle_buffer_size)
            self._streaming_dataset = dataset
            return DataLoader(
                dataset,
                batch_size=args.per_device_train_batch_size,
                collate_fn=self.collator,
                num_workers=self.data_args.dataloader_num_workers,
            )
        return DataLoader(
            self.train_dataset,
            batch_size=args.per_device_train_batch_size,
            shuffle=True,
            collate_fn=self.collator,
            num_workers=self.data_args.dataloader_num_workers,
            generator=torch.Generator().manual_seed(args.seed),
        )

    def _total_steps(self) -> int:
        args = self.args
        if args.max_steps > 0:
            return args.max_steps
        if self.streaming:
            raise ValueError("a streaming dataset has no length: set --max_steps")
        processes = self.accelerator.num_processes
        batches = math.ceil(len(self.train_dataset) / (args.per_device_train_batch_size * processes))
        return max(1, int(math.ceil(args.num_train_epochs * batches / args.gradient_accumulation_steps)))

    # ------------------------------------------------------------------------- checkpoints
    def _checkpoints(self) -> list[Path]:
        return complete_checkpoints(self.output_dir)

    def save_checkpoint(self) -> Path:
        folder = self.output_dir / f"checkpoint-{self.state.global_step}"
        self.accelerator.save_state(str(folder))
        # The state file marks a complete checkpoint ('latest' ignores folders without it): written once every
        # process has written its part, so a run killed mid-save never leaves a checkpoint that looks whole.
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.state.save(folder)
            limit = self.args.save_total_limit
            if limit:
                for old in self._checkpoints()[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return folder

    def _resume(self, checkpoint: str) -> None:
        folder = resolve_checkpoint(self.output_dir, checkpoint)
        saved = TrainerState.load(folder)
        requested, step = self.max_steps, saved.global_step
        planned = saved.planned_steps or requested
        # Older checkpoints did not record what was asked for: their plan stands in for it.
        if requested == (saved.requested_steps or planned):
            self.max_steps = planned  # the same run: continue exactly, re-planned length included
        else:
            args = self.args
            asked = f"--max_steps {requested}" if args.max_steps > 0 else f"{requested} steps (--num_train_epochs {args.num_train_epochs:g})"
            if requested > step:
                self._say(logging.INFO, "resuming at step %d of a %d-step run; training on to %s (cosine schedule "
                          "recomputed for %d steps, warm-up kept at %d)", step, planned, asked, requested,
                          saved.warmup_steps or self.warmup_steps)
            else:
                self._say(logging.WARNING, "resuming at step %d of a %d-step run, but %s asks for no more steps: "
                          "nothing to train; the model is saved as it is", step, planned, asked)
            self.max_steps = max(requested, step)
        if saved.warmup_steps:
            self.warmup_steps = saved.warmup_steps
        elif not self.args.warmup_steps:
            self.warmup_steps = int(math.ceil(self.args.warmup_ratio * planned))
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

    # ---------------------------------------------------------------------------- training
    def _epoch_batches(self):
        """Batches of the current epoch, skipping those a resumed checkpoint already consumed."""
        epoch, skip = self.state.epoch, self.state.batches_seen_in_epoch
        self.collator.set_epoch(epoch)
        if self.streaming:
            self._streaming_dataset.set_epoch(epoch)
            batches = iter(self.train_dataloader)
            return islice(batches, skip, None) if skip else batches
        self.train_dataloader.set_epoch(epoch)
        return self.accelerator.skip_first_batches(self.train_dataloader, skip) if skip else self.train_dataloader

    def _to_device(self, batch: dict) -> dict:
        device = self.accelerator.device
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _trace(self, image_ids: list[str]) -> None:
        folder = self.output_dir / "data_trace"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"rank{self.accelerator.process_index}.txt", "a") as handle:
            handle.write("".join(f"{self.state.global_step}\t{i}\n" for i in image_ids))

    def train(self) -> dict:
        """Train to `max_steps`; returns the final metrics (empty when there is no eval set).

        The output folder's lock is released when training ends, however it ends.
        """
        try:
            return self._train()
        finally:
            self.prepared.release()

    def _describe_run(self) -> None:
        """What a user needs to see before a long run: processes, batch, precision, length, destination."""
        args, accelerator = self.args, self.accelerator
        per_device, processes, accumulation = (args.per_device_train_batch_size, accelerator.num_processes,
                                               args.gradient_accumulation_steps)
        logger.info(
            "world size %d (%s, device %s), mixed precision %s; effective batch %d images = %d per device x %d "
            "process(es) x %d accumulation, %d expressions each; %d steps from step %d (warm-up %d); output_dir %s%s",
            processes, accelerator.distributed_type.value, accelerator.device, accelerator.mixed_precision,
            per_device * processes * accumulation, per_device, processes, accumulation,
            self.data_args.referents_per_image, self.max_steps, self.state.global_step, self.warmup_steps,
            self.output_dir.resolve(),
            f", push to https://huggingface.co/{self.prepared.hub_repo_id}" if self.prepared.hub_repo_id else "",
        )

    def _train(self) -> dict:
        args, accelerator = self.args, self.accelerator
        # Only now, with every check passed and the model and data built, does an overwritten run's past go.
        on_main_process(accelerator, self.prepared.clear_earlier_run)
        if args.resume_from_checkpoint:
            self._resume(args.resume_from_checkpoint)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._describe_run()
        if accelerator.trackers == [] and self._trackers():
            accelerator.init_trackers("unires", config=_flat_config(args, self.data_args))
        bar = tqdm(
            total=self.max_steps,
            initial=self.state.global_step,
            desc="training",
            unit="step",
            disable=args.disable_progress_bar or not accelerator.is_local_main_process,
        )
        self.model.train()
        running, running_count, started = 0.0, 0, time.perf_counter()
        if self.replanner is not None:
            self.replanner.start(self.clock())
        while self.state.global_step < self.max_steps:
            consumed_any = False
            resumed_at_epoch_end = self.state.batches_seen_in_epoch > 0  # a checkpoint taken after an epoch's last batch
            for batch in self._epoch_batches():
                consumed_any = True
                self.state.batches_seen_in_epoch += 1
                batch.pop("granularities", None)
                image_ids = batch.pop("image_ids", [])
                if args.trace_data:
                    self._trace(image_ids)
                with accelerator.accumulate(self.model):
                    loss = self.model(**self._to_device(batch)).loss
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"loss is {loss.item()} at step {self.state.global_step + 1} "
                            f"(images {image_ids}); stopping. Lower the learning rate or try --mixed_precision no."
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(self.model.parameters(), args.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                running += loss.detach().float().item()
                running_count += 1
                if not accelerator.sync_gradients:
                    continue
                self.state.global_step += 1
                step = self.state.global_step
                if self.replanner is not None:
                    self.max_steps = max(step, self.replanner.update(step, self.clock()))
                    bar.total = self.max_steps
                self.state.planned_steps = self.max_steps
                self.scheduler.step()
                bar.update(1)
                if step % args.logging_steps == 0 or step == self.max_steps:
                    mean_loss = accelerator.reduce(
                        torch.tensor(running / max(running_count, 1), device=accelerator.device), "mean"
                    ).item()
                    record = {"step": step, "loss": mean_loss, "lr": self.scheduler.get_last_lr()[-1]}
                    record["seconds"] = round(time.perf_counter() - started, 2)
                    self.state.log_history.append(record)
                    accelerator.log({"train/loss": mean_loss, "train/lr": record["lr"]}, step=step)
                    bar.set_postfix(loss=f"{mean_loss:.4f}")
                    running, running_count = 0.0, 0
                if args.save_steps and (step % args.save_steps == 0 or step >= self.max_steps):
                    # Also at the last step, as transformers' Trainer does: a run can be resumed with a larger
                    # --max_steps to train on.
                    self.save_checkpoint()
                if args.eval_steps and step % args.eval_steps == 0 and self.eval_dataset is not None:
                    self.log_metrics(self.evaluate(), step)
                if step >= self.max_steps:
                    break
            else:
                if not consumed_any and not resumed_at_epoch_end:
                    raise ValueError("the training data yielded no batch: is the split empty?")
                self.state.epoch += 1
                self.state.batches_seen_in_epoch = 0
        bar.close()
        if self.collator.skipped:
            logger.warning("training skipped %s", dict(self.collator.skipped))
        results = {}
        if args.do_final_eval and self.eval_dataset is not None:
            results = self.evaluate()
            self.log_metrics(results, self.state.global_step)
            if accelerator.is_main_process:
                logger.info("final metrics (%s, step %d):\n%s", self.data_args.eval_split, self.state.global_step,
                            format_metrics_table(results, include_options=False))
        self.save_model(eval_results={self.data_args.eval_split: results} if results else None)
        accelerator.end_training()
        return results

    # -------------------------------------------------------------------------- evaluation
    def evaluate(self, dataset=None, options: Optional[MRESMetricOptions] = None) -> dict:
        """Metrics on `dataset` (default: the eval set), each process scoring its share of images."""
        accelerator = self.accelerator
        model = accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        accumulator = accumulate_metrics(
            UniRESSegmenter(model, self.processor),
            dataset if dataset is not None else self.eval_dataset,
            options=options,
            batch_size=self.args.per_device_eval_batch_size,
            max_images=self.data_args.max_eval_images,
            process_index=accelerator.process_index,
            num_processes=accelerator.num_processes,
            progress=accelerator.is_local_main_process and not self.args.disable_progress_bar,
        )
        model.train(was_training)
        gathered = gather_object([accumulator])
        return reduce(MRESMetricAccumulator.merge, gathered[1:], gathered[0]).compute()

    def log_metrics(self, results: dict, step: int) -> None:
        flat = {
            f"eval/{group}/{name}": value
            for group, table in results.items()
            if isinstance(table, dict) and group != "options"
            for name, value in table.items()
            if isinstance(value, (int, float))
        }
        self.accelerator.log(flat, step=step)
        self.state.log_history.append({"step": step, "eval": results})

    # --------------------------------------------------------------------------- saving
    def save_model(self, output_dir: Optional[str] = None, eval_results: Optional[dict] = None) -> Path:
        """`save_pretrained` of model and processor plus a model card; pushes when asked."""
        accelerator = self.accelerator
        folder = Path(output_dir or self.output_dir)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.model)
            model.save_pretrained(folder)
            self.processor.save_pretrained(folder)
            (folder / "training_log.json").write_text(json.dumps(self.state.log_history, indent=2))
            write_model_card(
                folder,
                config=model.config,
                training_args=self.args,
                data_args=self.data_args,
                eval_results=eval_results,
                num_steps=self.state.global_step,
                mixed_precision=accelerator.mixed_precision,
                **{"model_id": self.prepared.hub_repo_id, **self.model_card_info},
            )
            logger.info("model, processor and model card saved to %s (step %d)", folder.resolve(), self.state.global_step)
            if self.args.push_to_hub:
                url = push_folder(folder, self.prepared.hub_repo_id, token=self.args.hub_token,
                                  commit_message=f"UniRES after {self.state.global_step} steps")
                logger.info("pushed to %s", url)
        accelerator.wait_for_everyone()
        return folder


def _flat_config(*dataclasses_) -> dict:
    """Tracker-friendly hyper-parameters (scalars only), without credentials (`hub_token`): trackers write them to
    files (TensorBoard's hparams.yml) and some upload them."""
    flat = {}
    for item in dataclasses_:
        for key, value in asdict(item).items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return without_secrets(flat)
