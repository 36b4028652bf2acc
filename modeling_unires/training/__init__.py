"""Training UniRES with Accelerate: arguments, data, the loop, the model card."""

from .arguments import DataArguments, ModelArguments, UniRESTrainingArguments
from .data import MRESTrainingCollator, load_mres_dataset
from .run import build_model, build_processor, run_training
from .trainer import UniRESTrainer

__all__ = [
    "DataArguments",
    "ModelArguments",
    "MRESTrainingCollator",
    "UniRESTrainer",
    "UniRESTrainingArguments",
    "build_model",
    "build_processor",
    "load_mres_dataset",
    "run_training",
]
