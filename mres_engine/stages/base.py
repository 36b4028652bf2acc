"""The interface every data-engine stage implements, and what a stage says about what it drops.

A stage maps a batch of per-image records (see :mod:`mres_engine.records`) to a
batch of records. It never drops anything silently: every image or referent it removes comes
back as a :class:`Reject` naming the stage and the reason, which the runner writes to the
rejects output by the same exactly-once rule as the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass
class Reject:
    """One rejected image (``referent_id`` is None) or one rejected referent of an image."""

    image_id: str
    stage: str
    reason: str
    referent_id: str | None = None


@dataclass
class StageOutput:
    """What a stage returns: the records it kept (possibly changed) and what it rejected."""

    records: list[dict] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


@runtime_checkable
class EngineStage(Protocol):
    """A step of the engine: ``stage(records) -> StageOutput``; ``name`` labels its rejects and timings."""

    name: str

    def __call__(self, records: list[dict]) -> StageOutput: ...
