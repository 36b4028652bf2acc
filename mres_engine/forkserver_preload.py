"""Imported by the local executor's forkserver only (see :func:`mres_engine.workers.children_die_with_this_process`):
the workers it forks die with it, and it exits when the driver dies, so they end with the driver."""

from .workers import guard_forks

guard_forks(True)
