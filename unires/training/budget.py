"""Turn a wall-clock budget into a number of optimisation steps, by measuring a few.

A cosine schedule needs its length up front, so a run "for ten minutes" is planned as a run
of N steps, with N measured on this machine: reading the rows (a `datasets.Dataset` decodes
its images and masks then, as in training), collate, forward, backward, gradient clipping and
an AdamW step on a throw-away copy of the model (the model itself, its gradients and the
global random state are left untouched).
"""

from __future__ import annotations

import copy
import time
from typing import Sequence

import torch


def measure_step_seconds(
    model, collator, rows: Sequence[dict], batch_size: int, steps: int = 3, max_grad_norm: float = 1.0
) -> float:
    """Median seconds of one training step (read rows + collate + forward + backward + clip + AdamW) on `rows`."""
    if not rows:
        raise ValueError("measure_step_seconds needs at least one row")
    probe = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=1e-6)
    rng_state = torch.random.get_rng_state()
    timings = []
    try:
        for step in range(steps + 1):  # the first step warms up allocators and kernels
            start = time.perf_counter()
            chunk = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
            batch = collator(chunk)
            batch = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
            probe(**batch).loss.backward()
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(probe.parameters(), max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step:
                timings.append(time.perf_counter() - start)
    finally:
        torch.random.set_rng_state(rng_state)
    return sorted(timings)[len(timings) // 2]


def steps_for_budget(seconds: float, step_seconds: float, minimum: int = 10) -> int:
    """How many steps of `step_seconds` fit in `seconds` (at least `minimum`)."""
    if seconds <= 0 or step_seconds <= 0:
        raise ValueError(f"budget and step time must be positive, got {seconds} and {step_seconds}")
    return max(minimum, int(seconds / step_seconds))
