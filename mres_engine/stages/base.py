"""The interface every data-engine stage implements, and what a stage says about what it drops.

A stage maps a batch of per-image records (:class:`~mres_engine.records.ImageRecord`) to a
batch of records, returning a changed copy (``dataclasses.replace``) of a record it changes. It
never drops anything silently: every image or referent it removes comes back as a
:class:`Reject` naming the stage and the reason, which the runner writes to the rejects output
by the same exactly-once rule as the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # for annotations only: this module stays light (the options import it)
    from ..records import ImageRecord


@dataclass
class Reject:
    """One rejected image (``referent_id`` is None) or one rejected referent of an image.

    ``level`` names something smaller that a stage gave up while keeping the referent
    ``referent_id``: ``"parts"`` (its parts were not searched) or ``"sentence"`` (one of its
    sentences was dropped). Such a reject is logged under its own item id
    (``"<referent_id>#parts"``), so that a referent that is written is never also counted as
    skipped: every image and referent sits in exactly one account.
    """

    image_id: str
    stage: str
    reason: str
    referent_id: str | None = None
    level: str | None = None

    @property
    def kind(self) -> str:
        """``"image"``, ``"referent"``, or the ``level`` of a smaller item."""
        return self.level or ("image" if self.referent_id is None else "referent")

    @property
    def item_id(self) -> str:
        """The id this reject is logged under: the image's, the referent's, or ``"<referent_id>#<level>"``."""
        if self.level:
            return f"{self.referent_id}#{self.level}"
        return self.image_id if self.referent_id is None else self.referent_id


@dataclass
class StageOutput:
    """What a stage returns: the records it kept (possibly changed) and what it rejected."""

    records: list[ImageRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


@runtime_checkable
class EngineStage(Protocol):
    """A step of the engine: ``stage(records) -> StageOutput``; ``name`` labels its rejects and timings."""

    name: str

    def __call__(self, records: list[ImageRecord]) -> StageOutput: ...
