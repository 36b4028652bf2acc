"""Per-stage accounting of an engine run: what went in, what was kept, what was rejected and why, how long.

Each shard keeps one :class:`RunStats`; the driver merges the shards' stats into ``stats.json``
and prints them as a table. A reason is counted by its head (the text before the first ``:``), as
:class:`run_support.rejects.RejectLog` does, so "missing image: a.jpg" and "missing image:
b.jpg" add up.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from .stages.base import Reject

if TYPE_CHECKING:  # for annotations only: the stats stay light (the finaliser and the progress bar read them)
    from .records import ImageRecord


def reason_head(reason: str) -> str:
    return reason.split(":")[0].strip()


def _count_referents(records: Iterable[ImageRecord]) -> int:
    return sum(len(r.referents) for r in records)


@dataclass
class StageStats:
    """Counts and seconds of one stage over the images it saw."""

    images_in: int = 0
    images_kept: int = 0
    referents_in: int = 0
    referents_kept: int = 0
    images_rejected: Counter = field(default_factory=Counter)
    referents_rejected: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    # what a stage gave up of a referent it kept (its parts search, one of its sentences): not a referent rejected
    others_rejected: Counter = field(default_factory=Counter)

    def add(self, records_in: list[ImageRecord], records_out: list[ImageRecord], rejects: list[Reject], seconds: float) -> None:
        self.images_in += len(records_in)
        self.images_kept += len(records_out)
        self.referents_in += _count_referents(records_in)
        self.referents_kept += _count_referents(records_out)
        for reject in rejects:
            kind = reject.kind
            target = {"image": self.images_rejected, "referent": self.referents_rejected}.get(kind, self.others_rejected)
            target[reason_head(reject.reason)] += 1
        self.seconds += seconds

    def merge(self, other: "StageStats") -> None:
        for name in ("images_in", "images_kept", "referents_in", "referents_kept", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.images_rejected.update(other.images_rejected)
        self.referents_rejected.update(other.referents_rejected)
        self.others_rejected.update(other.others_rejected)

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_in": self.images_in,
            "images_kept": self.images_kept,
            "referents_in": self.referents_in,
            "referents_kept": self.referents_kept,
            "images_rejected": dict(self.images_rejected),
            "referents_rejected": dict(self.referents_rejected),
            "others_rejected": dict(self.others_rejected),
            "seconds": round(self.seconds, 6),
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "StageStats":
        return cls(
            images_in=value["images_in"],
            images_kept=value["images_kept"],
            referents_in=value["referents_in"],
            referents_kept=value["referents_kept"],
            images_rejected=Counter(value["images_rejected"]),
            referents_rejected=Counter(value["referents_rejected"]),
            others_rejected=Counter(value.get("others_rejected") or {}),  # absent in shard records before it
            seconds=value["seconds"],
        )


@dataclass
class RunStats:
    """The stages' stats in pipeline order plus the runner's own time (everything outside a stage)."""

    stages: dict[str, StageStats] = field(default_factory=dict)
    images_in: int = 0
    images_written: int = 0
    referents_written: int = 0
    seconds_total: float = 0.0

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats())

    @property
    def seconds_in_stages(self) -> float:
        return sum(s.seconds for s in self.stages.values())

    @property
    def runner_share(self) -> float:
        """Share of the wall time spent outside the stages (reading, writing Parquet, bookkeeping)."""
        if self.seconds_total <= 0:
            return 0.0
        return max(0.0, self.seconds_total - self.seconds_in_stages) / self.seconds_total

    def merge(self, other: "RunStats") -> None:
        for name, stats in other.stages.items():
            self.stage(name).merge(stats)
        self.images_in += other.images_in
        self.images_written += other.images_written
        self.referents_written += other.referents_written
        self.seconds_total += other.seconds_total

    def to_dict(self) -> dict[str, Any]:
        return {
            "images_in": self.images_in,
            "images_written": self.images_written,
            "referents_written": self.referents_written,
            "seconds_total": round(self.seconds_total, 6),
            "seconds_in_stages": round(self.seconds_in_stages, 6),
            "runner_share": round(self.runner_share, 6),
            # a list, not a mapping: the pipeline's order survives JSON writers that sort keys
            "stages": [{"name": name, **s.to_dict()} for name, s in self.stages.items()],
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "RunStats":
        return cls(
            stages={s["name"]: StageStats.from_dict(s) for s in value["stages"]},
            images_in=value["images_in"],
            images_written=value["images_written"],
            referents_written=value["referents_written"],
            seconds_total=value["seconds_total"],
        )

    def table(self) -> str:
        """A plain-text table, one line per stage, then the runner's own share."""
        lines = [
            f"{'stage':<24} {'images in':>10} {'kept':>10} {'referents in':>13} {'kept':>10} {'seconds':>9}  rejected by reason"
        ]
        for name, s in self.stages.items():
            reasons = [f"{r}: {n}" for r, n in s.images_rejected.most_common()]
            reasons += [f"{r}: {n} referents" for r, n in s.referents_rejected.most_common()]
            reasons += [f"{r}: {n} (referent kept)" for r, n in s.others_rejected.most_common()]
            lines.append(
                f"{name:<24} {s.images_in:>10} {s.images_kept:>10} {s.referents_in:>13} {s.referents_kept:>10}"
                f" {s.seconds:>9.2f}  {'; '.join(reasons) or '-'}"
            )
        lines.append(
            f"written: {self.images_written} images, {self.referents_written} referents; "
            f"{self.seconds_total:.2f} s in shard tasks, {self.runner_share:.1%} outside the stages "
            "(reading, image bytes, Parquet, bookkeeping)"
        )
        return "\n".join(lines)
