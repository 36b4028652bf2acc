"""Turn a wall-clock budget into a number of optimisation steps: plan it, then keep it.

A cosine schedule needs its length up front, so a run "for ten minutes" is planned as a run
of N steps, with N measured on this machine: reading the rows (a `datasets.Dataset` decodes
its images and masks then, as in training), collate, forward, backward, gradient clipping and
an AdamW step on a throw-away copy of the model (the model itself, its gradients and the
global random state are left untouched). Warm-up steps (allocators, kernel selection,
compilation) are run but not timed, and CUDA is synchronised before each reading.

A probe of a few steps can still be off (on a GPU the real loop overlaps data loading and
compute; on a shared CPU the load changes), so `StepReplanner` re-plans the step count during
training from the rate actually measured, and the trainer's schedule follows the new length.
"""

from __future__ import annotations

import copy
import time
from typing import Sequence

import torch

from .optimization import build_optimizer


def measure_step_seconds(
    model,
    collator,
    rows: Sequence[dict],
    batch_size: int,
    steps: int = 3,
    max_grad_norm: float = 1.0,
    warmup_steps: int = 2,
) -> float:
    """Median seconds of one training step (read rows + collate + forward + backward + clip + AdamW) on `rows`."""
    if not rows:
        raise ValueError("measure_step_seconds needs at least one row")
    probe = copy.deepcopy(model).train()
    optimizer = build_optimizer([{"params": list(probe.parameters()), "lr": 1e-6}], betas=(0.9, 0.999))  # as trained
    rng_state = torch.random.get_rng_state()
    device = next(probe.parameters()).device
    timings = []
    try:
        for step in range(steps + warmup_steps):  # warm-up steps fill allocators, pick kernels, compile
            _synchronize(device)
            start = time.perf_counter()
            chunk = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
            batch = collator(chunk)
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            probe(**batch).loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(probe.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _synchronize(device)
            if step >= warmup_steps:
                timings.append(time.perf_counter() - start)
    finally:
        torch.random.set_rng_state(rng_state)
    return sorted(timings)[len(timings) // 2]


def steps_for_budget(seconds: float, step_seconds: float, minimum: int = 10) -> int:
    """How many steps of `step_seconds` fit in `seconds` (at least `minimum`)."""
    if seconds <= 0 or step_seconds <= 0:
        raise ValueError(f"budget and step time must be positive, got {seconds} and {step_seconds}")
    return max(minimum, int(seconds / step_seconds))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StepReplanner:
    """Keeps a run within `budget_seconds` of wall-clock time by re-planning its number of steps.

    Call `update(step, now)` after every optimisation step with a monotonic clock reading; it returns the new total
    step count (never below `step`, so a spent budget ends the run at once). The plan is revised every
    `budget_seconds / revisions` seconds from the rate of the steps since the previous revision (the first window
    starts after `warmup_steps` steps: compilation and allocator warm-up are not representative), so it follows a
    machine whose load changes rather than an average over load that is gone.
    """

    def __init__(self, budget_seconds: float, planned_steps: int, warmup_steps: int = 3, revisions: int = 20):
        if budget_seconds <= 0 or planned_steps < 1:
            raise ValueError(f"budget and planned steps must be positive, got {budget_seconds} and {planned_steps}")
        self.budget_seconds = float(budget_seconds)
        self.planned_steps = int(planned_steps)
        self.warmup_steps = max(1, int(warmup_steps))
        self.interval = self.budget_seconds / max(1, revisions)
        self.started_at: float | None = None
        self._reference: tuple[int, float] | None = None
        self._last_revision = float("-inf")

    def start(self, now: float) -> None:
        self.started_at = now

    def update(self, step: int, now: float) -> int:
        if self.started_at is None:
            raise RuntimeError("StepReplanner.start(now) must be called before the first update")
        if self._reference is None:
            if step >= self.warmup_steps:
                self._reference = (step, now)
                self._last_revision = now
            return self.planned_steps
        if now - self._last_revision < self.interval and now - self.started_at < self.budget_seconds:
            return self.planned_steps
        reference_step, reference_time = self._reference
        if step > reference_step:
            seconds_per_step = (now - reference_time) / (step - reference_step)
            remaining = self.budget_seconds - (now - self.started_at)
            self.planned_steps = step + max(0, int(remaining / seconds_per_step)) if seconds_per_step > 0 else step
            self._last_revision = now
            self._reference = (step, now)
        return self.planned_steps
