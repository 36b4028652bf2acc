"""UniRES training: what of the one training loop (`run_support.training_loop.TrainingLoop`) is UniRES's.

The loop (Accelerate: one CPU, several GPUs, several machines through `accelerate launch`) gives exact resume,
checkpoints, the schedule over a re-plannable length, the wall-clock budget, the stop on a non-finite loss and the
output-folder claim; this file adds what is UniRES's: AdamW groups with their own learning rate for the CLIP towers,
the MRES collator and its per-epoch sampling, streaming datasets split per process, the data trace, periodic
evaluation with the harness's metrics, and the final `save_pretrained` with a model card and push.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from functools import reduce
from pathlib import Path
from typing import Optional

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, gather_object
from torch.utils.data import DataLoader

from run_support.hub import TRACKER_LOG_DIR
from run_support.optimization import build_optimizer, build_parameter_groups
from run_support.output_dir import SAVED_MODEL_FILES
from run_support.run_claim import PreparedRun, RunKind, prepare_run
from run_support.training_loop import LoopSettings, TrainingLoop

from ..evaluation.harness import accumulate_metrics
from ..evaluation.segmenters import UniRESSegmenter
from ..evaluation.segmenters.unires import ADAPTER_FILES, is_peft_model
from ..evaluation.metrics import MRESMetricAccumulator, MRESMetricOptions, format_metrics_table
from .arguments import DataArguments, UniRESTrainingArguments
from .collator import MRESTrainingCollator
from .hub import push_folder
from .model_card import write_model_card

logger = logging.getLogger(__name__)

# The CLIP towers (`UniRESModel.from_clip` loads them): their own learning rate, --backbone_learning_rate.
BACKBONE_PREFIXES = ("vision_encoder.vision_model.", "text_model.")
# What a finished run leaves in output_dir, for the overwrite rule: a saved model, or (--finetune lora) a peft adapter.
UNIRES_RUN = RunKind(name="UniRESTrainer", script="examples/train.py", run_folders=("data_trace",),
                     saved_model_files=(*SAVED_MODEL_FILES, *ADAPTER_FILES))


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


class UniRESTrainer(TrainingLoop):
    """Trains a `UniRESModel` on MRES-schema image rows (the one loop, `TrainingLoop`, with UniRES's parts).

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

    kind = UNIRES_RUN
    tracker_project = "unires"  # TensorBoard logs: output_dir/runs/unires/

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
        accelerator = accelerator or build_accelerator(args)
        prepared = prepared or prepare_run(accelerator, args, UNIRES_RUN)
        if args.gradient_checkpointing:
            # transformers 5.2x renamed it; keep working with both names.
            getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        streaming = not hasattr(train_dataset, "__len__")
        collator = collator or MRESTrainingCollator(
            processor, data_args.referents_per_image, granularity=data_args.granularity, seed=args.seed
        )
        backbone_lr = args.backbone_learning_rate if args.backbone_learning_rate is not None else args.learning_rate
        optimizer = build_optimizer(
            build_parameter_groups(model, args.learning_rate, backbone_lr, args.weight_decay, BACKBONE_PREFIXES),
            betas=(args.adam_beta1, args.adam_beta2),
        )
        dataloader, streaming_dataset = self._train_dataloader(accelerator, collator, streaming)
        # A LoRA run (a peft model) checkpoints the adapter's weights only: a resume loads the base model again from
        # --model_name_or_path, as the run began.
        self.checkpoint_trainable_weights_only = is_peft_model(model)
        super().__init__(
            accelerator, model, optimizer, dataloader,
            LoopSettings.from_args(args, max_steps=self._total_steps(accelerator, streaming)),
            prepared=prepared, shard_dataloader=not streaming, streaming_dataset=streaming_dataset, collator=collator,
        )

    def _train_dataloader(self, accelerator, collator, streaming) -> tuple[DataLoader, object]:
        """The loader, and the per-process stream whose epoch the loop sets (None for a map-style dataset, which
        Accelerate shards and whose sampler is seeded)."""
        args = self.args
        if streaming:
            from datasets.distributed import split_dataset_by_node

            # Sharded per process here: Accelerate must not shard it again.
            dataset = split_dataset_by_node(
                self.train_dataset, rank=accelerator.process_index, world_size=accelerator.num_processes,
            ).shuffle(seed=args.seed, buffer_size=self.data_args.shuffle_buffer_size)
            loader = DataLoader(dataset, batch_size=args.per_device_train_batch_size, collate_fn=collator,
                                num_workers=self.data_args.dataloader_num_workers)
            return loader, dataset
        loader = DataLoader(self.train_dataset, batch_size=args.per_device_train_batch_size, shuffle=True,
                            collate_fn=collator, num_workers=self.data_args.dataloader_num_workers,
                            generator=torch.Generator().manual_seed(args.seed))
        return loader, None

    def _total_steps(self, accelerator, streaming) -> int:
        args = self.args
        if args.max_steps > 0:
            return args.max_steps
        if streaming:
            raise ValueError("a streaming dataset has no length: set --max_steps")
        batches = math.ceil(len(self.train_dataset) / (args.per_device_train_batch_size * accelerator.num_processes))
        return max(1, int(math.ceil(args.num_train_epochs * batches / args.gradient_accumulation_steps)))

    # --------------------------------------------------------------------------------- the loop's hooks
    def compute_loss(self, model, batch: dict):
        batch.pop("granularities", None)
        image_ids = batch.pop("image_ids", [])
        if self.args.trace_data:
            self._trace(image_ids)
        return model(**batch).loss, True

    def describe_batch(self, batch: dict) -> str:
        return f" (images {batch.get('image_ids', [])})"

    def after_step(self, step: int) -> None:
        if self.args.eval_steps and step % self.args.eval_steps == 0 and self.eval_dataset is not None:
            self.log_metrics(self.evaluate(), step)

    def tracker_config(self) -> Optional[dict]:
        return _flat_config(self.args, self.data_args) if _trackers(self.args) else None

    def describe_run(self) -> str:
        return f"{super().describe_run()}; {self.data_args.referents_per_image} expressions per image"

    def finish(self) -> dict:
        if self.collator.skipped:
            logger.warning("training skipped %s", dict(self.collator.skipped))
        results = {}
        if self.args.do_final_eval and self.eval_dataset is not None:
            results = self.evaluate()
            self.log_metrics(results, self.state.global_step)
            if self.accelerator.is_main_process:
                logger.info("final metrics (%s, step %d):\n%s", self.data_args.eval_split, self.state.global_step,
                            format_metrics_table(results, include_options=False))
        self.save_model(eval_results={self.data_args.eval_split: results} if results else None)
        return results

    def _trace(self, image_ids: list[str]) -> None:
        folder = self.output_dir / "data_trace"
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"rank{self.accelerator.process_index}.txt", "a") as handle:
            handle.write("".join(f"{self.state.global_step}\t{i}\n" for i in image_ids))

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
        """`save_pretrained` of model and processor plus a model card; pushes when asked.

        A LoRA run's model is a peft `PeftModel`: its `save_pretrained` writes the adapter (adapter_config.json,
        adapter_model.safetensors), which `PeftModel.from_pretrained(UniRESModel.from_pretrained(base), folder)`
        loads. A saved model of the other kind that an overwritten run left in the folder is removed, so that the
        folder holds one model."""
        accelerator = self.accelerator
        folder = Path(output_dir or self.output_dir)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.model)
            adapter = is_peft_model(model)
            folder.mkdir(parents=True, exist_ok=True)
            for stale in (SAVED_MODEL_FILES if adapter else ADAPTER_FILES):
                (folder / stale).unlink(missing_ok=True)
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
            logger.info("%s, processor and model card saved to %s (step %d)", "LoRA adapter" if adapter else "model",
                        folder.resolve(), self.state.global_step)
            if self.args.push_to_hub:
                what = "UniRES LoRA adapter" if adapter else "UniRES"
                url = push_folder(folder, self.prepared.hub_repo_id, token=self.args.hub_token,
                                  commit_message=f"{what} after {self.state.global_step} steps")
                logger.info("pushed to %s", url)
        accelerator.wait_for_everyone()
        return folder


def _flat_config(*dataclasses_) -> dict:
    """Tracker-friendly hyper-parameters (scalars only); the loop drops credentials (`hub_token`) before any tracker
    sees them (`TrainingLoop._train`: trackers write them to files, TensorBoard's hparams.yml, and some upload them)."""
    flat = {}
    for item in dataclasses_:
        for key, value in asdict(item).items():
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
