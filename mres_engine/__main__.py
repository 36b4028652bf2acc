"""Command line of the data engine.

    python -m mres_engine run --annotations objects365.json --image_dir images/ --output_dir OUT [...]
    python -m mres_engine publish --output_dir OUT [--repo_id org/mres-32m]
    python -m mres_engine evaluate --prediction OUT --ground_truth GT [--split train]

``python -m mres_engine COMMAND --help`` lists every option of a command.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Optional

COMMANDS = {
    "run": "run or resume the engine: detection boxes -> masks, parts, captions, CLIP filter -> Parquet shards",
    "publish": "check a finished output, write its dataset card (and push it to the Hub with --repo_id)",
    "evaluate": "compare an output with ground truth in the MRES schema (matched-mask IoU, part recall, keep rates)",
}


@dataclass
class PublishOptions:
    """What to publish and where."""

    output_dir: str = field(metadata={"help": "An engine output folder whose shards are all complete."})
    repo_id: Optional[str] = field(default=None, metadata={"help": "Hub dataset repo to push to (e.g. org/mres-32m); unset: write the card only."})
    private: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    pretty_name: str = field(default="MRES engine output", metadata={"help": "Title of the dataset card."})
    license: str = field(default="other", metadata={"help": "Licence of the card (that of the source images)."})


def _usage() -> str:
    lines = [__doc__.strip(), "", "commands:"] + [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    from transformers import HfArgumentParser

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    prog = f"python -m mres_engine {command}"
    if command == "run":
        from .options import RunnerOptions, StageOptions
        from .run import run_engine

        parser = HfArgumentParser((RunnerOptions, StageOptions), prog=prog, description=COMMANDS[command])
        runner_options, stage_options = parser.parse_args_into_dataclasses(args=rest)
        run_engine(runner_options, stage_options)
        return 0
    if command == "publish":
        from .finalize import finalize_run

        parser = HfArgumentParser(PublishOptions, prog=prog, description=COMMANDS[command])
        (options,) = parser.parse_args_into_dataclasses(args=rest)
        card = {"pretty_name": options.pretty_name, "license": options.license}
        summary = finalize_run(options.output_dir, card_data=card)
        print(json.dumps(summary["exactly_once"]))
        if options.repo_id:
            from dataset_scripts.publish import publish_shards

            from .finalize import engine_card_data
            from .stats import RunStats

            stats = RunStats.from_dict(summary)
            url = publish_shards(options.output_dir, options.repo_id, private=options.private,
                                 card_data=engine_card_data(options.output_dir, stats, card))
            print(f"pushed to {url}")
        return 0
    from .evaluation import EvaluateOptions, main_evaluate

    parser = HfArgumentParser(EvaluateOptions, prog=prog, description=COMMANDS[command])
    (options,) = parser.parse_args_into_dataclasses(args=rest)
    main_evaluate(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
