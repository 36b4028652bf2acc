"""What every command line of the project shares: one help style, checked numbers, errors in one line.

Every script (``examples/*.py``, ``python -m dataset_scripts.mres_synth``, ``python -m mres_engine``) spells
its options with underscores, shows each option's default in ``--help``, and refuses a bad number while
parsing (exit code 2, argparse's own convention) rather than producing a dataset without a split.
"""

from __future__ import annotations

import argparse


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
