"""Command-line arguments of the UniRES trainer, as `HfArgumentParser` dataclasses.

Three groups, as in the transformers example scripts: where the model comes from, what
data it sees, and how it is optimised. Defaults follow the paper's fine-tuning recipe
(AdamW, weight decay 5e-4, lr 1e-5, cosine decay with warm-up) where one applies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ModelArguments:
    """Where the model comes from: a UniRES checkpoint, a CLIP checkpoint, or a config."""

    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "A UniRES checkpoint (Hub id or folder) to start from."}
    )
    clip_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "A CLIPModel checkpoint whose towers initialise a new UniRES (`UniRESModel.from_clip`)."},
    )
    config_name: Optional[str] = field(
        default=None, metadata={"help": "A UniRES config (folder, Hub id or config.json) to train from scratch."}
    )
    config_overrides: Optional[str] = field(
        default=None,
        metadata={"help": 'JSON object of UniRESConfig values to override, e.g. \'{"decoder_stage1_layers": 2}\'.'},
    )
    ablation: Optional[str] = field(
        default=None,
        metadata={"help": "Table 8 ablation applied to the config: full, no_group_tokens, low_only, high_only."},
    )
    processor_name_or_path: Optional[str] = field(
        default=None,
        metadata={"help": "Processor (image processor + CLIP tokenizer); defaults to the model or CLIP checkpoint."},
    )
    attn_implementation: Optional[str] = field(
        default=None, metadata={"help": "Attention implementation: eager or sdpa (transformers' default when unset)."}
    )
    finetune: str = field(
        default="full",
        metadata={
            "help": "What trains: full (every weight); frozen_towers (the CLIP vision and text towers frozen, the rest "
            "trains); lora (LoRA adapters through peft on --lora_target_modules, everything else frozen: needs "
            "--model_name_or_path, saves an adapter that PeftModel.from_pretrained loads on that base; pip install "
            "'unires[finetune]').",
            "choices": ["full", "frozen_towers", "lora"],
        },
    )
    lora_r: int = field(default=8, metadata={"help": "--finetune lora: the rank of the LoRA matrices."})
    lora_alpha: int = field(default=16, metadata={"help": "--finetune lora: LoRA's scale numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "--finetune lora: dropout on the LoRA input."})
    lora_target_modules: Optional[str] = field(
        default=None,
        metadata={
            "help": "--finetune lora: comma-separated module names, matched as the end of a module's path inside the "
            "decoder and the mask head (never the CLIP towers). Default: every linear layer there: "
            "q_proj,k_proj,v_proj,out_proj,fc1,fc2,score_query,score_key,visual_projection.0,text_projection.0,"
            "sentence_projection.0,group_projection.0,projection,alignment_visual_projection,"
            "alignment_text_projection,pixel_filter."
        },
    )
    base_model_id: Optional[str] = field(
        default=None,
        metadata={
            "help": "--finetune lora: the Hub id the adapter names as its base (adapter_config.json's "
            "base_model_name_or_path) when --model_name_or_path is a local copy of it; required to --push_to_hub an "
            "adapter trained from a local folder, whose path no one else could load."
        },
    )

    def __post_init__(self):
        if self.finetune not in ("full", "frozen_towers", "lora"):
            raise ValueError(f"--finetune must be full, frozen_towers or lora, got {self.finetune!r}")
        if self.lora_r < 1:
            raise ValueError(f"--lora_r must be >= 1, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")

    def parsed_overrides(self) -> dict:
        if not self.config_overrides:
            return {}
        try:
            overrides = json.loads(self.config_overrides)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config_overrides is not valid JSON: {self.config_overrides!r} ({error})") from error
        if not isinstance(overrides, dict):
            raise ValueError(f"--config_overrides must be a JSON object, got {self.config_overrides!r}")
        return overrides


@dataclass
class DataArguments:
    """What the model sees: datasets in the MRES schema, by Hub id or local folder."""

    dataset: list[str] = field(
        default_factory=list,
        metadata={"help": "One or more datasets in the MRES schema (Hub ids or folders written by `publish`)."},
    )
    dataset_weights: Optional[list[float]] = field(
        default=None, metadata={"help": "Sampling weight of each --dataset when mixing (default: equal)."}
    )
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_dataset: Optional[str] = field(
        default=None, metadata={"help": "Dataset for periodic evaluation (default: the first --dataset)."}
    )
    eval_split: str = field(default="validation", metadata={"help": "Split for periodic evaluation."})
    max_eval_images: Optional[int] = field(
        default=None, metadata={"help": "Evaluate on at most this many images (all when unset)."}
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream the training data (sharded per process with split_dataset_by_node)."}
    )
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "Shuffle buffer when streaming."})
    referents_per_image: int = field(
        default=4,
        metadata={"help": "K: referents sampled per image; the K expressions share one image encoding."},
    )
    granularity: Optional[str] = field(
        default=None, metadata={"help": "Train on one granularity only: object or part (default: both)."}
    )
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes."})


@dataclass
class UniRESTrainingArguments:
    """How the model is optimised, checkpointed, evaluated and published."""

    output_dir: str = field(default="outputs/unires", metadata={"help": "Where checkpoints and the model go."})
    seed: int = field(default=42, metadata={"help": "Seed for initialisation, shuffling and referent sampling."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Images per device per step."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Images per device at evaluation."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps to accumulate before an update."})
    learning_rate: float = field(
        default=1e-5,
        metadata={
            "help": "Peak learning rate of the new (non-CLIP) parts. The default 1e-5 is the paper's, for fine-tuning "
            "from CLIP (--clip_name_or_path) or a UniRES checkpoint (--model_name_or_path). Training from a config "
            "(--config_name, random weights) needs a larger one: `make demo` trains from a config at 1e-3."
        },
    )
    backbone_learning_rate: Optional[float] = field(
        default=None, metadata={"help": "Peak learning rate of the CLIP towers (default: --learning_rate)."}
    )
    weight_decay: float = field(default=5e-4, metadata={"help": "AdamW weight decay."})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1."})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 disables)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs (ignored when --max_steps is set)."})
    max_steps: int = field(default=-1, metadata={"help": "Total optimisation steps; overrides epochs when > 0."})
    max_train_minutes: Optional[float] = field(
        default=None,
        metadata={
            "help": "Wall-clock training budget. The step count (from --max_steps or the epochs) is the first plan; "
            "it is re-planned during training from the measured step rate so that training ends within the budget, "
            "and the cosine schedule follows the new length."
        },
    )
    warmup_ratio: float = field(default=0.0, metadata={"help": "Share of steps spent warming up linearly."})
    warmup_steps: int = field(default=0, metadata={"help": "Warm-up steps (overrides --warmup_ratio when > 0)."})
    mixed_precision: Optional[str] = field(
        default=None,
        metadata={
            "help": "no, fp16 or bf16. Unset (the default), Accelerate decides: `accelerate launch --mixed_precision`, "
            "`accelerate config`, or ACCELERATE_MIXED_PRECISION; given, it overrides them."
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for activation memory."})
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    save_steps: int = field(
        default=500,
        metadata={
            "help": "Save a resumable checkpoint every N optimisation steps and at the last step (0: never). "
            "A checkpoint at the last step is what `--resume_from_checkpoint latest --max_steps MORE` trains on from."
        },
    )
    save_total_limit: Optional[int] = field(default=2, metadata={"help": "Keep at most this many checkpoints."})
    eval_steps: int = field(default=0, metadata={"help": "Evaluate every N steps (0: only at the end)."})
    do_final_eval: bool = field(default=True, metadata={"help": "Evaluate once more after training."})
    resume_from_checkpoint: Optional[str] = field(
        default=None,
        metadata={
            "help": "A checkpoint folder to resume from, or 'latest' for the newest in output_dir. A --max_steps (or "
            "--num_train_epochs) other than the checkpoint's run trains on to the new length: the cosine schedule is "
            "recomputed for it, the warm-up kept."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train from the start in an --output_dir that holds an earlier run: its checkpoints are deleted "
            "when training starts (after every check), its saved model is replaced when this run saves. Without it "
            "(and without --resume_from_checkpoint) a folder holding checkpoints or a saved model is refused."
        },
    )
    report_to: Optional[str] = field(
        default="auto", metadata={"help": "Accelerate trackers: auto (TensorBoard when installed), none, or a name."}
    )
    push_to_hub: bool = field(
        default=False,
        metadata={
            "help": "Upload the model, processor and model card to the Hub at the end. Checked before the first step "
            "(offline mode, login, repo creation and write access)."
        },
    )
    hub_model_id: Optional[str] = field(
        default=None,
        metadata={"help": "Hub repo for --push_to_hub, org/name (default: the --output_dir folder's name under your user)."},
    )
    hub_token: Optional[str] = field(
        default=None,
        metadata={"help": "Hub token with write access (default: the saved `hf auth login`). Kept out of the tracker "
                  "logs, the model card and the upload."},
    )
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    trace_data: bool = field(
        default=False,
        metadata={"help": "Write the image ids each process trained on to output_dir/data_trace/ (debugging)."},
    )
    disable_progress_bar: bool = field(default=False, metadata={"help": "Hide the progress bar."})

    def __post_init__(self):
        if isinstance(self.push_to_hub, str):  # the earlier spelling, push_to_hub="org/name"
            if self.hub_model_id and self.hub_model_id != self.push_to_hub:
                raise ValueError(f"push_to_hub={self.push_to_hub!r} and hub_model_id={self.hub_model_id!r} disagree")
            self.hub_model_id, self.push_to_hub = self.push_to_hub, True
        if self.mixed_precision is not None and self.mixed_precision not in {"no", "fp16", "bf16"}:
            raise ValueError(f"--mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"--gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")
        if self.max_train_minutes is not None and self.max_train_minutes <= 0:
            raise ValueError(f"--max_train_minutes must be positive, got {self.max_train_minutes}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set --max_steps or a positive --num_train_epochs")
