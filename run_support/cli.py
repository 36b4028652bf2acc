"""What every command line of the project shares: one help style, checked numbers, errors in one line.

Every script (``examples/*.py``, ``python -m dataset_scripts.mres_synth``, ``python -m mres_engine``) spells
its options with underscores, shows each option's default in ``--help``, and refuses a bad number while
parsing (exit code 2, argparse's own convention) rather than producing a dataset without a split.
"""

from __future__ import annotations

import argparse
import os


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and ``(default: ...)`` after every option's help."""


def non_negative_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def probability(text: str) -> float:
    """An argparse ``type``: a number in [0, 1] (a threshold on probabilities)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {value}")
    return value


def argument_error(parser: argparse.ArgumentParser, message: str):
    """Exit with code 2 as ``parser.error`` does, but with one usage line: a training script's full usage is
    sixty lines, which would push the error itself off the screen."""
    parser.exit(2, f"usage: {parser.prog} [options] (every option: {parser.prog} --help)\n"
                   f"{parser.prog}: error: {message}\n")


def refuse_missing_paths(parser: argparse.ArgumentParser, local_or_hub=(), local=()) -> None:
    """Refuse, as an argument error (exit code 2), a path option whose value names nothing here.

    ``local_or_hub``: ``(option, value, kind[, hint])`` for a value that may be a folder or a Hub id
    (``check_local_or_hub`` tells a mistyped path from a Hub id; ``hint`` ends its message); ``local``: ``(option, value, kind)`` for a value that must exist here.
    An unset (``None`` or empty) value is skipped. Called right after parsing, before any folder is created or any heavy import.
    """
    from .sources import check_local_or_hub  # huggingface_hub's constants: not needed by --help

    for option, value, kind, *hint in local_or_hub:
        if not value:
            continue
        try:
            check_local_or_hub(value, kind=kind, hint=hint[0] if hint else "")
        except OSError as error:  # FileNotFoundError included
            argument_error(parser, f"{option}: {error}")
    for option, value, kind in local:
        if value and not os.path.exists(os.path.expanduser(os.fspath(value))):
            argument_error(parser, f"{option}: No {kind} at {value}.")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def root_cause(error: BaseException) -> BaseException:
    """The builder's own error behind `datasets`' wrappers: `datasets` wraps it (it names the file and the
    item) in a ``DatasetGenerationError`` that names neither."""
    while type(error).__module__.startswith("datasets") and error.__cause__ is not None:
        error = error.__cause__
    return error
