"""The time budget: re-planning the step count from the measured rate, and the trainer following the plan."""

import pytest

from run_support.budget import StepReplanner


def test_replanner_ignores_warm_up_and_follows_the_measured_rate():
    planner = StepReplanner(budget_seconds=100.0, planned_steps=1000, warmup_steps=3, revisions=10)
    planner.start(0.0)
    # Three slow warm-up steps (compilation) are not part of the rate.
    assert [planner.update(step, 10.0 * step) for step in (1, 2, 3)] == [1000, 1000, 1000]
    # Then 1 s a step: at t=40 (step 13) the rate is 1 s/step and 60 s remain → 13 + 60 = 73 steps.
    assert planner.update(13, 40.0) == 73
    # The machine slows to 2 s a step. Within the revision interval (10 s) the plan stands; at the next
    # revision the rate of the steps since the last one is (60 - 40) / (23 - 13) = 2 s/step and 40 s remain → 23 + 20.
    assert planner.update(15, 44.0) == 73
    assert planner.update(23, 60.0) == 43
    # It speeds up again to 0.5 s a step: the next window sees it at once.
    assert planner.update(43, 70.0) == 43 + int(30.0 / 0.5)
    # A spent budget ends the run at the current step.
    assert planner.update(50, 101.0) == 50


def test_replanner_errors():
    with pytest.raises(ValueError, match="must be positive"):
        StepReplanner(0, 10)
    with pytest.raises(RuntimeError, match="start"):
        StepReplanner(10, 10).update(1, 1.0)
