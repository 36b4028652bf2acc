"""The dense captioner's training arguments: which base model and LoRA, which data, how to optimise and publish.

Kept apart from the training loop, with no heavy import, so that `examples/train_captioner.py --help` answers at
once; :mod:`captioner.train` uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .defaults import DEFAULT_BASE_MODEL, DEFAULT_LORA_TARGET_MODULES, DEFAULT_MAX_IMAGE_TOKENS


@dataclass
class CaptionerModelArguments:
    """Which base model, and how LoRA adapts it."""

    base_model: str = field(default=DEFAULT_BASE_MODEL, metadata={"help": "Hub id or folder of any AutoModelForImageTextToText checkpoint."})
    torch_dtype: str | None = field(default=None, metadata={"help": "Weights dtype when loading: float32, bfloat16, float16 or auto (default: the library's)."})
    attn_implementation: str | None = field(default=None, metadata={"help": "eager, sdpa or flash_attention_2 (default: the library's choice)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch."})
    lora_target_modules: str = field(default=",".join(DEFAULT_LORA_TARGET_MODULES), metadata={"help": "Comma-separated names of the language-model linear layers LoRA adapts (the vision tower is never matched)."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Keep the vision tower frozen (--no_freeze_vision_tower trains it in full and saves it with the adapter)."})


@dataclass
class CaptionerDataArguments:
    """Where the downloaded releases are, and how they are mixed."""

    coco_dir: str | None = field(default=None, metadata={"help": "COCO root with annotations/captions_train2017.json and train2017/ (image level)."})
    visual_genome_dir: str | None = field(default=None, metadata={"help": "Visual Genome root with region_descriptions.json and VG_100K*/ (object level)."})
    paco_dir: str | None = field(default=None, metadata={"help": "PACO root with annotations/paco_lvis_v1_train.json and the COCO images (part level)."})
    partimagenet_dir: str | None = field(default=None, metadata={"help": "PartImageNet root with annotations/train.json and images/train/ (part level)."})
    mixture_weights: str | None = field(default=None, metadata={"help": "Sampling weights, e.g. 'coco_captions=1,visual_genome=2,paco=1,partimagenet=1' (default 1 each)."})
    mixture_stopping_strategy: str = field(default="first_exhausted", metadata={"help": "When one pass over the weighted mixture (one epoch) ends: 'first_exhausted' (default) when the first source runs out, so no example repeats within an epoch; 'all_exhausted' when every source has been seen, repeating the smaller ones (PACO about 13.7x at the README's weights)."})
    max_image_tokens: int | None = field(default=DEFAULT_MAX_IMAGE_TOKENS, metadata={"help": "Cap on the tokens of one image (Qwen recommends 256-1,280; its processor allows 16,384). Larger images are resized down."})
    max_examples_per_source: int | None = field(default=None, metadata={"help": "Use at most this many (shuffled) examples of each source."})
    max_length: int | None = field(default=None, metadata={"help": "Longest encoded example in tokens; longer ones are skipped and logged (default: the model's context)."})
    check_first_rows: int = field(default=64, metadata={"help": "Stop with an error when none of the first this many rows (per process) yields a supervised token."})
    cache_dir: str | None = field(default=None, metadata={"help": "datasets cache folder for the prepared sources."})
    rejects_file: str | None = field(default=None, metadata={"help": "JSONL of skipped records and their reasons (default: OUTPUT_DIR/rejects.jsonl)."})


@dataclass
class CaptionerTrainingArguments:
    """Optimisation, precision, checkpoints and publishing."""

    output_dir: str = field(default="outputs/captioner", metadata={"help": "Where the adapter, processor, model card and checkpoints go."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Examples per device per step."})
    gradient_accumulation_steps: int = field(default=4, metadata={"help": "Micro-batches accumulated per optimizer step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs over the mixture; one epoch is one pass of the weighted mixture, which ends when its first source is exhausted (see --mixture_stopping_strategy). Ignored when max_steps > 0."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps to run; > 0 defines the run by steps and overrides num_train_epochs."})
    warmup_ratio: float = field(default=0.03, metadata={"help": "Fraction of the steps spent warming the learning rate up."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "cosine, linear, constant or constant_with_warmup (transformers' schedules of these names)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16 or bf16 (Accelerate autocast). Unset (the default), Accelerate decides: `accelerate launch --mixed_precision`, `accelerate config` or ACCELERATE_MIXED_PRECISION."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in the backward pass to save memory."})
    logging_steps: int = field(default=10, metadata={"help": "Log the mean loss every this many optimizer steps."})
    save_steps: int = field(default=500, metadata={"help": "Save a resumable checkpoint every this many optimizer steps (0: never)."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep at most this many checkpoints: after each save the oldest complete ones are deleted (0: keep all). A checkpoint holds the adapter and the optimizer, scheduler, RNG and data position, not the frozen base model."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "A checkpoint folder, or 'latest' for the newest one in output_dir. A --max_steps (or --num_train_epochs) other than the checkpoint's run trains on to the new length: the schedule is recomputed for it, the warm-up kept."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Overwrite the content of the output directory: delete the checkpoints an earlier run left in --output_dir and train from the start. Without it (and without --resume_from_checkpoint) a folder holding checkpoints is refused."})
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, shuffling and the mixture."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})
    report_to: str | None = field(default=None, metadata={"help": "Accelerate tracker for metrics, e.g. tensorboard or wandb."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the adapter, processor and model card to the Hub at the end. Checked before the first step (offline mode, login, repo creation and write access)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo for --push_to_hub, org/name (default: the --output_dir folder's name under your user)."})
    hub_token: str | None = field(default=None, metadata={"help": "Hub token with write access (default: the saved `hf auth login`)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})

    def __post_init__(self):
        if self.save_total_limit is not None and self.save_total_limit < 0:
            raise ValueError(f"--save_total_limit must be 0 (keep every checkpoint) or more, got {self.save_total_limit}.")
