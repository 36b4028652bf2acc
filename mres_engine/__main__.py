"""Command line of the data engine.

    python -m mres_engine run --annotations objects365.json --image_dir images/ --output_dir OUT [...]
    python -m mres_engine publish --output_dir OUT [--push_to_hub --hub_dataset_id org/mres-32m]
    python -m mres_engine evaluate --prediction OUT --ground_truth GT [--split train]

``python -m mres_engine COMMAND --help`` lists every option of a command. An error ends in one line
naming the file, item, key or option at fault: exit code 2 for a bad argument, 1 for bad data or a
failed run; ``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from run_support.output_dir import OutputDirInUseError, OutputDirLock

from .errors import EngineError, EngineUsageError
from .options import RunnerOptions, StageOptions
from .stats import RunStats

# The commands' own modules load datasets, transformers, datatrove or pycocotools: each is imported by its command.

COMMANDS = {
    "run": "run or resume the engine: detection boxes -> masks, parts, captions, CLIP filter -> Parquet shards",
    "publish": "check a finished output, write its dataset card (and push it to the Hub with --push_to_hub)",
    "evaluate": "compare an output with ground truth in the MRES schema (matched-mask IoU, part recall, keep rates)",
}


@dataclass
class PublishOptions:
    """What to publish and where."""

    output_dir: str = field(metadata={"help": "An engine output folder whose shards are all complete."})
    push_to_hub: bool = field(default=False, metadata={"help": "Push the folder to the Hub dataset repo --hub_dataset_id (login and write access checked first)."})
    hub_dataset_id: Optional[str] = field(default=None, metadata={"help": "Hub dataset repo to push to, org/name (e.g. org/mres-32m)."})
    hub_token: Optional[str] = field(default=None, metadata={"help": "Token with write access (default: the saved login)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repo as private."})
    pretty_name: str = field(default="MRES engine output", metadata={"help": "Title of the dataset card."})
    license: str = field(default="other", metadata={"help": "Licence of the card (that of the source images)."})


def _usage() -> str:
    lines = [__doc__.strip(), "", "commands:"] + [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def _parser(dataclass_types, command: str, prog: str):
    """The command's parser: an argument error prints one short usage line and the error; ``--help`` lists every option."""
    from transformers import HfArgumentParser  # heavy: not for the usage text

    return HfArgumentParser(dataclass_types, prog=prog, description=COMMANDS[command],
                            usage=f"{prog} [options] (--help lists them)")


def _parse(parser, rest: list[str]):
    """``parse_args_into_dataclasses``, whose ValueErrors (unused arguments, a dataclass refusing a value) are bad arguments."""
    try:
        return parser.parse_args_into_dataclasses(args=rest)
    except EngineError:
        raise
    except ValueError as error:
        raise EngineUsageError(None, str(error)) from error


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    prog = f"python -m mres_engine {command}"
    try:
        return _command(command, rest, prog)
    except EngineError as error:
        if debug:
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as error:  # a failed run: one line, the traceback with --debug
        if debug:
            raise
        text = " ".join(str(error).split()) or "(no message)"
        where = ""
        if isinstance(error, OSError) and getattr(error, "filename", None) and str(error.filename) not in text:
            where = f"{error.filename}: "
        print(f"{prog}: error: {where}{type(error).__name__}: {text} (--debug shows the traceback)", file=sys.stderr)
        return 1


def _command(command: str, rest: list[str], prog: str) -> int:
    if command == "run":
        from .run import run_engine

        parser = _parser((RunnerOptions, StageOptions), command, prog)
        runner_options, stage_options = _parse(parser, rest)
        run_engine(runner_options, stage_options)
        return 0
    if command == "publish":
        parser = _parser(PublishOptions, command, prog)
        (options,) = _parse(parser, rest)
        if not os.path.isdir(options.output_dir):
            raise EngineUsageError("--output_dir", f"{options.output_dir}: no such folder")
        if options.push_to_hub and not options.hub_dataset_id:
            raise EngineUsageError("--hub_dataset_id", "--push_to_hub needs the Hub dataset repo, org/name")
        repo_id = None
        if options.push_to_hub:  # before the exactly-once check reads every shard
            from run_support.hub import check_push_access  # huggingface_hub's client

            repo_id = check_push_access(options.hub_dataset_id, options.output_dir, token=options.hub_token,
                                        private=options.hub_private_repo, repo_type="dataset", option="--hub_dataset_id")
        card = {"pretty_name": options.pretty_name, "license": options.license}
        try:  # no run writes the folder while its card is written and pushed
            lock = OutputDirLock.acquire(options.output_dir)
        except OutputDirInUseError as error:
            raise EngineError(str(error)) from None
        try:
            return _publish(options, repo_id, card)
        finally:
            lock.release()
    from .evaluation import EvaluateOptions, main_evaluate

    parser = _parser(EvaluateOptions, command, prog)
    (options,) = _parse(parser, rest)
    main_evaluate(options)
    return 0


def _publish(options: PublishOptions, repo_id: Optional[str], card: dict) -> int:
    """Check the output, write its card and, with ``repo_id``, push it (under the folder's lock)."""
    from .finalize import engine_card_data, finalize_run

    summary = finalize_run(options.output_dir, card_data=card)
    print(json.dumps(summary["exactly_once"]))
    if not repo_id:
        return 0
    if not summary["exactly_once"]["written"]:
        raise EngineUsageError("--push_to_hub", f"{options.output_dir} holds 0 rows (every image was rejected): nothing to push")
    from dataset_scripts.publish import publish_shards

    stats = RunStats.from_dict(summary)
    url = publish_shards(options.output_dir, repo_id, private=options.hub_private_repo, token=options.hub_token,
                         card_data=engine_card_data(options.output_dir, stats, card))
    print(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
