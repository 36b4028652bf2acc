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
from accelerate.utils import DataLoaderConfiguration, gather_object
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..evaluation.evaluator import UniRESRowSegmenter, evaluate_predictor
from ..evaluation.metrics import MRESMetricAccumulator, MRESMetricOptions
from .arguments import DataArguments, UniRESTrainingArguments
from .budget import StepReplanner
from .collator import MRESTrainingCollator
from .model_card import write_model_card
from .optimizer import build_optimizer, build_parameter_groups

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """What, besides Accelerate's state, a checkpoint needs for an exact resume."""

    global_step: int = 0
    planned_steps: int = 0  # the run's length, as last (re-)planned
    epoch: int = 0
    batches_seen_in_epoch: int = 0
    log_history: list = field(default_factory=list)

    def save(self, folder: Path) -> None:
        (folder / STATE_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "TrainerState":
        path = folder / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: {folder} is not a checkpoint written by UniRESTrainer")
        return cls(**json.loads(path.read_text()))


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
    ):
        self.args = args
        self.data_args = data_args
        self.processor = processor
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.model_card_info = model_card_info or {}
        self.output_dir = Path(args.output_dir)
        self.accelerator = accelerator or Accelerator(
            mixed_precision=args.mixed_precision,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            log_with=self._trackers(),
            project_dir=str(self.output_dir),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        )
        if args.gradient_checkpointing:
            # transformers 5.2x renamed it; keep working with both names.
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        self.streaming = not hasattr(train_dataset, "__len__")
        self.collator = collator or MRESTrainingCollator(
            processor, data_args.referents_per_image, granularity=data_args.granularity, seed=args.seed
        )
        self.state = TrainerState()
        self.max_steps = self._total_steps()
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
        choice = (self.args.report_to or "none").lower()
        if choice == "none":
            return None
        if choice == "auto":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                return None
            return "tensorboard"
        return choice

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
        found = [p for p in self.output_dir.glob("checkpoint-*") if (p / STATE_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))

    def save_checkpoint(self) -> Path:
        folder = self.output_dir / f"checkpoint-{self.state.global_step}"
        self.accelerator.save_state(str(folder))
        if self.accelerator.is_main_process:
            self.state.save(folder)
            limit = self.args.save_total_limit
            if limit:
                for old in self._checkpoints()[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        return folder

    def _resume(self, checkpoint: str) -> None:
        if checkpoint == "latest":
            found = self._checkpoints()
            if not found:
                raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {self.output_dir}")
            checkpoint = str(found[-1])
        folder = Path(checkpoint)
        self.state = TrainerState.load(folder)
        if self.state.planned_steps:
            self.max_steps = self.state.planned_steps
        self.accelerator.load_state(str(folder))
        logger.info("resumed from %s at step %d", folder, self.state.global_step)

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
        """Train to `max_steps`; returns the final metrics (empty when there is no eval set)."""
        args, accelerator = self.args, self.accelerator
        if args.resume_from_checkpoint:
            self._resume(args.resume_from_checkpoint)
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
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
                if args.save_steps and step % args.save_steps == 0:
                    self.save_checkpoint()
                if args.eval_steps and step % args.eval_steps == 0 and self.eval_dataset is not None:
                    self.log_metrics(self.evaluate(), step)
                if step >= self.max_steps:
                    break
            else:
                if not consumed_any:
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
        accumulator = evaluate_predictor(
            UniRESRowSegmenter(model, self.processor),
            dataset if dataset is not None else self.eval_dataset,
            options=options,
            input_size=model.config.image_size,
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
                **self.model_card_info,
            )
            if self.args.push_to_hub:
                from huggingface_hub import upload_folder, create_repo

                create_repo(self.args.push_to_hub, private=self.args.hub_private, exist_ok=True)
                upload_folder(
                    repo_id=self.args.push_to_hub,
                    folder_path=str(folder),
                    ignore_patterns=["checkpoint-*", "data_trace/*", "runs/*"],
                    commit_message=f"UniRES after {self.state.global_step} steps",
                )
        accelerator.wait_for_everyone()
        return folder


def _flat_config(*dataclasses_) -> dict:
    """Tracker-friendly hyper-parameters (scalars only)."""
    flat = {}
    for item in dataclasses_:
        for key, value in asdict(item).items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
