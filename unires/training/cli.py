"""The command line of `examples/train.py`: the arguments are read before torch, accelerate or the model load,
so that `--help` and a mistyped option answer at once."""

from __future__ import annotations

import logging
import sys
from typing import Optional

from .arguments import DataArguments, ModelArguments, UniRESTrainingArguments

logger = logging.getLogger(__name__)


def main(argv: Optional[list[str]] = None) -> dict:
    """Command-line entry point (`examples/train.py`)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser((ModelArguments, DataArguments, UniRESTrainingArguments))
    argv = _earlier_push_spelling(list(sys.argv[1:] if argv is None else argv))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from .run import run_training

    _, metrics = run_training(model_args, data_args, training_args)
    return metrics


def _earlier_push_spelling(argv: list[str]) -> list[str]:
    """`--push_to_hub org/name` and `--hub_private`, the earlier spellings, as `--push_to_hub --hub_model_id
    org/name` and `--hub_private_repo` (the spelling of transformers and of the captioner's trainer)."""
    out, i = [], 0
    booleans = {"true", "false", "yes", "no", "1", "0", "t", "f", "y", "n"}
    while i < len(argv):
        item = argv[i]
        if item == "--push_to_hub" and i + 1 < len(argv) and not argv[i + 1].startswith("-") \
                and argv[i + 1].lower() not in booleans:
            logger.warning("--push_to_hub %s is the earlier spelling; use --push_to_hub --hub_model_id %s",
                           argv[i + 1], argv[i + 1])
            out += ["--push_to_hub", "--hub_model_id", argv[i + 1]]
            i += 2
            continue
        out.append("--hub_private_repo" if item == "--hub_private" else item)
        i += 1
    return out
