"""Training UniRES with Accelerate: arguments, the collator, the loop, the model card, the budget probe."""

from .arguments import DataArguments, ModelArguments, UniRESTrainingArguments
from .collator import MRESTrainingCollator
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
    "run_training",
]
