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
    check_arguments(parser, model_args, data_args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from .run import run_training

    _, metrics = run_training(model_args, data_args, training_args)
    return metrics


def check_arguments(parser, model_args, data_args) -> None:
    """Refuse, in one line and before any import, folder or lock, what can be seen on the command line alone: no
    --dataset, a mistyped path (named as a missing path, not as a Hub connection error), an unfinished engine run."""
    from run_support.cli import argument_error, refuse_missing_paths
    from run_support.sources import unfinished_engine_run

    if not data_args.dataset:
        argument_error(parser, "--dataset is required: one or more datasets in the MRES schema (Hub ids or folders "
                               "written by `publish` or the data engine)")
    # --resume_from_checkpoint is checked by run_training, whose message lists the checkpoints there are.
    refuse_missing_paths(
        parser,
        local_or_hub=[("--model_name_or_path", model_args.model_name_or_path, "model"),
                      ("--clip_name_or_path", model_args.clip_name_or_path, "model"),
                      ("--config_name", model_args.config_name, "config"),
                      ("--processor_name_or_path", model_args.processor_name_or_path, "processor"),
                      *[("--dataset", name, "dataset") for name in data_args.dataset],
                      ("--eval_dataset", data_args.eval_dataset, "dataset")],
    )
    datasets = [("--dataset", name) for name in data_args.dataset] + [("--eval_dataset", data_args.eval_dataset)]
    for option, name in datasets:
        if name and unfinished_engine_run(name):
            sys.exit(f"error: {option} {name} is a data-engine run that has not finished (it has no stats.json "
                     "yet): its shards may still be appearing. Train on it once the run has ended.")


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
