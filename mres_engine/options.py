"""Every knob of the engine, as two dataclasses that ``HfArgumentParser`` turns into ``--help``.

:class:`RunnerOptions`: where the data comes from and goes, how it is sharded, where the shards run.
:class:`StageOptions`: models, thresholds, devices and batch sizes of the stages, which
:func:`mres_engine.stages.build.build_stages` turns into the stages in the paper's order:
load images -> object masks (SAM) -> part vocabulary (LLM) -> part masks (detector + SAM, or
SAM 3) -> captions (dense captioner) -> CLIP filter. Models load lazily, on the first batch
that needs them, so that building the stages (e.g. in a datatrove launcher process) is cheap.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

from .errors import EngineUsageError

if TYPE_CHECKING:
    from .stages.base import EngineStage

# SA-1B's filtering thresholds (Kirillov et al., 2023, "Segment Anything", section 4 / appendix):
# keep masks with predicted IoU >= 0.88 and stability score >= 0.95.
SA1B_MIN_PREDICTED_IOU = 0.88
SA1B_MIN_STABILITY = 0.95
DEFAULT_SAM_TYPE = "vit_h"
DEFAULT_TRANSFORMERS_SAM = "facebook/sam-vit-huge"
DEFAULT_PART_LLM = "Qwen/Qwen2.5-1.5B-Instruct"
DEFAULT_PART_DETECTOR = "google/owlv2-base-patch16-ensemble"
DEFAULT_SAM3 = "facebook/sam3"
EXECUTORS = ("local", "slurm", "ray")
DEFAULT_STAGES_FACTORY = "mres_engine.stages.build:build_stages"
SPLIT_NAME = r"\w+(\.\w+)*"  # what datasets accepts as a split name (datasets.splits' _split_re)


def _opt(default, help: str, **kwargs):
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class RunnerOptions:
    """Where the data comes from and goes, how it is sharded, and where the shards run."""

    annotations: Optional[str] = _opt(None, "COCO/Objects365-format detection JSON (images, annotations with bbox and category_id, categories).")
    image_dir: Optional[str] = _opt(None, "Folder the manifest's file_name entries are relative to.")
    hub_dataset: Optional[str] = _opt(None, "Instead of --annotations: a datasets detection dataset (Hub id or folder) with an image column and an objects column of bbox and category lists; exported once to OUT/input/.")
    hub_split: str = _opt("train", "Split of --hub_dataset.")
    hub_objects_column: str = _opt("objects", "Column of --hub_dataset holding the boxes and categories.")
    hub_bbox_format: str = _opt("xywh", "Box format of --hub_dataset: xywh (COCO) or xyxy.", choices=["xywh", "xyxy"])
    hub_id_column: Optional[str] = _opt("image_id", "Column of --hub_dataset with the image ids (row index when absent).")
    output_dir: str = _opt("mres-engine-output", "Output folder: Parquet shards, rejects, stats and dataset card (see mres_engine.layout).")
    source: str = _opt("objects365", "Value of the `source` column of every row.")
    split: str = _opt("train", "Split name of the output shards.")
    num_shards: int = _opt(8, "Number of shards (= datatrove tasks). Fixed for an output folder: a rerun must use the same.")
    workers: int = _opt(-1, "Shards processed at once on this machine (local executor) or in the whole job (slurm/ray); -1: one per visible GPU, or 1 without GPUs.")
    images_per_batch: int = _opt(8, "Images sent through the stages together.")
    max_shard_size: str = _opt("500MB", "Upper bound of one Parquet file; a shard that outgrows it continues in a new part file.")
    executor: str = _opt("local", "datatrove executor: local (this machine), slurm (an sbatch array job) or ray (a running Ray cluster).", choices=list(EXECUTORS))
    stages_factory: str = _opt(DEFAULT_STAGES_FACTORY, "'module:function' called with the StageOptions that returns the stages (replace to run your own stages).")
    start_method: str = _opt("forkserver", "multiprocessing start method of the local executor's worker pool (CUDA needs forkserver or spawn).")
    progress: bool = _opt(True, "Show a progress bar (images, images/s): one for the run on this machine, one per shard task in slurm/ray logs.")
    force_new: bool = _opt(False, "Clear an existing output made from other inputs or options (its shards, manifest, card, logs) and start anew; "
                           "without it such a rerun is refused, naming each difference.")
    check_resources: bool = _opt(True, "slurm/ray: before submitting, check that some node of the cluster (partition) holds one task's "
                                 "--cpus_per_task, --gpus_per_task and memory; turn off for an autoscaling cluster whose nodes appear on demand.")
    # cluster resources (slurm / ray)
    gpus_per_task: int = _opt(1, "GPUs per shard task on slurm/ray (each task is pinned to its own GPU).")
    cpus_per_task: int = _opt(8, "CPUs per shard task on slurm/ray.")
    mem_per_cpu_gb: float = _opt(8.0, "Memory per CPU in GB on slurm/ray.")
    slurm_partition: Optional[str] = _opt(None, "Slurm partition (executor=slurm).")
    slurm_time: str = _opt("24:00:00", "Slurm time limit of one shard task.")
    slurm_job_name: str = _opt("mres-engine", "Slurm job name.")
    slurm_qos: str = _opt("normal", "Slurm QOS.")
    slurm_env_command: Optional[str] = _opt(None, "Shell command run before each slurm task (e.g. 'source /path/.venv/bin/activate'); default: this Python's venv.")
    ray_address: str = _opt("auto", "Address of the running Ray cluster (executor=ray), passed to ray.init.")

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise EngineUsageError("--executor", f"must be one of {EXECUTORS}, got {self.executor!r}")
        for name in ("num_shards", "images_per_batch", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise EngineUsageError(f"--{name}", f"must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_task < 0:
            raise EngineUsageError("--gpus_per_task", f"must be >= 0, got {self.gpus_per_task}")
        if not self.mem_per_cpu_gb > 0:
            raise EngineUsageError("--mem_per_cpu_gb", f"must be > 0, got {self.mem_per_cpu_gb}")
        if self.workers == 0 or self.workers < -1:
            raise EngineUsageError("--workers", f"must be >= 1, or -1 for the default, got {self.workers}")
        if not re.fullmatch(SPLIT_NAME, self.split or ""):
            raise EngineUsageError("--split", f"{self.split!r} is not a split name: words of letters, digits and underscores, "
                                              "joined by dots (train, validation, train.part1), as datasets requires")
        if ":" not in self.stages_factory:
            raise EngineUsageError("--stages_factory", f"must be 'module:function', got {self.stages_factory!r}")
        from datasets.utils.py_utils import convert_file_size_to_int  # datasets: heavy for a --help

        try:
            convert_file_size_to_int(self.max_shard_size)
        except ValueError as error:
            raise EngineUsageError("--max_shard_size", f"{self.max_shard_size!r} is not a size such as 500MB ({error})") from None


@dataclass
class StageOptions:
    """Models, thresholds, devices and batch sizes of the engine's six stages."""

    # -- devices ------------------------------------------------------------------------------
    device: str = _opt("auto", "Device for every model: 'auto' (cuda when present, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    dtype: str = _opt("auto", "Weights dtype of the part LLM, the captioner and CLIP: 'auto' (bfloat16 on cuda, float32 on cpu), "
                      "'float32', 'bfloat16', 'float16'. SAM and the part detector run in float32.")
    image_root: str | None = _opt(None, "Folder that relative image file names are relative to (None: as in the records).")

    # -- object masks (stage 2) ---------------------------------------------------------------
    sam_backend: str = _opt("segment_anything", "Object-mask model: 'segment_anything' (the paper's SAM package) or 'transformers' (SamModel/Sam2Model by Hub id).",
                            choices=["segment_anything", "transformers"])
    sam_model_type: str = _opt(DEFAULT_SAM_TYPE, "segment_anything model type: vit_h, vit_l or vit_b.", choices=["vit_h", "vit_l", "vit_b"])
    sam_checkpoint: str | None = _opt(None, "segment_anything checkpoint (.pth state dict, e.g. sam_vit_h_4b8939.pth from "
                                      "https://github.com/facebookresearch/segment-anything#model-checkpoints); loaded with weights_only=True.")
    sam_model: str = _opt(DEFAULT_TRANSFORMERS_SAM, "Hub id or path of a transformers SamModel/Sam2Model (sam_backend=transformers).")
    sam_min_iou: float = _opt(SA1B_MIN_PREDICTED_IOU, "Reject a mask whose SAM predicted IoU is below this (SA-1B: 0.88).")
    sam_min_stability: float = _opt(SA1B_MIN_STABILITY, "Reject a mask whose stability score is below this (SA-1B: 0.95).")
    sam_stability_offset: float = _opt(1.0, "Logit offset of the stability score (SA-1B: 1.0).")
    sam_box_batch_size: int = _opt(64, "Boxes decoded together on one image encoding.")

    # -- part vocabulary (stage 3) ------------------------------------------------------------
    part_vocabulary: str = _opt("local", "Where part names come from: 'local' (a transformers causal LM), 'openai' "
                                "(an OpenAI-compatible chat endpoint), 'file' (a user vocabulary), 'none' (objects only).",
                                choices=["local", "openai", "file", "none"])
    part_llm: str = _opt(DEFAULT_PART_LLM, "Hub id or path of the local causal LM, or the model name sent to the endpoint.")
    part_llm_url: str | None = _opt(None, "Base URL of an OpenAI-compatible server, e.g. http://localhost:8000/v1 (part_vocabulary=openai).")
    part_llm_api_key_env: str = _opt("OPENAI_API_KEY", "Environment variable holding the API key of the part LLM and captioner "
                                     "endpoints (unset: no key sent).")
    part_vocabulary_file: str | None = _opt(None, "JSON file {object category: [part names]} (e.g. PACO's object-part list) used instead of an LLM.")
    part_vocabulary_cache: str | None = _opt(None, "JSON cache of LLM answers keyed by (category, model, prompt version); a rerun asks nothing twice.")
    max_parts_per_category: int = _opt(8, "At most this many part names per object category.")
    part_llm_attempts: int = _opt(3, "Questions per category before its part list is rejected (chatty or invalid answers are retried).")

    # -- part masks (stage 4) -----------------------------------------------------------------
    part_masks: str = _opt("detector", "Part-mask method: 'detector' (zero-shot detector + SAM) or 'sam3' (transformers Sam3Model).",
                           choices=["detector", "sam3"])
    part_detector: str = _opt(DEFAULT_PART_DETECTOR, "Hub id or path of an AutoModelForZeroShotObjectDetection (part_masks=detector).")
    part_sam3_model: str = _opt(DEFAULT_SAM3, "Hub id or path of a transformers Sam3Model (part_masks=sam3).")
    part_min_score: float = _opt(0.2, "Detector (or SAM 3) confidence below which a part candidate is not considered.")
    part_max_per_name: int = _opt(4, "At most this many candidates per part name and object (highest scores first).")
    part_min_inside: float = _opt(0.5, "Keep a part only if |part ∩ object| / min(|part|, |object|) reaches this.")
    part_dedup_overlap: float = _opt(0.8, "Two same-name parts of one object whose overlap over the smaller mask reaches this are one part.")
    part_box_margin: float = _opt(0.05, "The object crop shown to the detector is the object box grown by this fraction per side.")

    # -- captions (stage 5) -------------------------------------------------------------------
    captioner: str | None = _opt(None, "Hub id or path of the dense captioner (a merged model or a LoRA adapter); None: captioner's default base model.")
    captioner_url: str | None = _opt(None, "Caption through this OpenAI-compatible server instead of a local model.")
    captioner_box_format: str = _opt("qwen3_vl", "Box syntax of the served captioner's base family (the server does not say): "
                                     "qwen3_vl ({\"bbox_2d\": [...]} in [0, 1000]), qwen2_vl ((x1,y1),(x2,y2) in [0, 1000]) "
                                     "or paper ((x1,y1),(x2,y2) in [0, 999]). A local captioner reads it from its config.")
    caption_max_new_tokens: int = _opt(32, "Longest caption in tokens; a caption cut at this length is rejected.")
    caption_token_budget: int = _opt(16384, "Tokens (padded prompt + new) per captioning batch.")

    # -- CLIP filter (stage 6) ----------------------------------------------------------------
    clip_model: str = _opt("openai/clip-vit-base-patch32", "Hub id or path of the CLIP model of the filter.")
    clip_min_score: float = _opt(0.5, "Keep a sentence whose CLIPScore = 2.5 * max(cos, 0) exceeds this (paper: 0.5, i.e. cos > 0.2).")
    clip_batch_size: int = _opt(64, "Crops scored together.")


def resolve_device(device: str) -> str:
    """``'auto'`` -> ``'cuda'`` when a GPU is present, else ``'cpu'``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str):
    """The torch dtype for ``dtype`` on ``device`` (``'auto'``: bfloat16 on CUDA, float32 elsewhere)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_stages_factory(path: str) -> Callable[[Any], list[EngineStage]]:
    """The function that ``--stages_factory`` names (``'module:function'``), called with the StageOptions."""
    module_name, _, attribute = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise EngineUsageError("--stages_factory", f"cannot load {path!r}: {error}") from error
