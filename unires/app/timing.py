"""Wall-clock time of each step of one request, shown on the page so that a visitor sees what a step costs."""

from __future__ import annotations

import time
from contextlib import contextmanager


class StepTimes:
    """Ordered `(step, seconds)` pairs; `with times.step("encode image"):` records one step."""

    def __init__(self):
        self.steps: list[tuple[str, float]] = []

    @contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.steps.append((name, time.perf_counter() - start))

    def add(self, name: str, seconds: float) -> None:
        """Record a step that was timed elsewhere (or skipped: 0 seconds)."""
        self.steps.append((name, float(seconds)))

    def as_dict(self) -> dict[str, float]:
        return dict(self.steps)

    def total(self) -> float:
        return sum(seconds for _, seconds in self.steps)
