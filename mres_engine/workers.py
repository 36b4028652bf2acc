"""The local executor's worker processes end with the driver, and a run never starts beside an earlier run's workers.

The driver of ``python -m mres_engine run`` holds the output folder's lock (``OUT/.lock``,
:class:`run_support.output_dir.OutputDirLock`) for the whole run. A record lock belongs to one
process, so it says nothing of the processes the driver started: datatrove's worker pool, its
``multiprocess`` manager and, with the default start method, the forkserver. Killed alone (SIGKILL,
an OOM kill), the driver used to leave them running: the workers finished their shards and renamed
files under a rerun that was redoing the same shards (``FileNotFoundError`` on a temporary file the
other process had just renamed). Two rules close that:

- **They die with the driver.** Every process forked by the driver while the executor runs (and, with
  ``forkserver``, by the forkserver, which itself exits when the driver dies) asks the kernel for
  ``SIGKILL`` when its parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux); elsewhere a thread polls the
  parent pid (as ``run_support.launcher`` does for training workers; a candidate for the shared
  run floor). PDEATHSIG follows the parent *thread*: the pool's workers and the manager are forked by
  the driver's main thread (and by the forkserver's), which lives as long as the run.
- **A run waits for the workers of the one before.** Each worker holds a shared record lock on
  ``OUT/.workers.lock`` from its first task to its end; a run, once it holds ``OUT/.lock``, takes that
  file's exclusive lock (then drops it) before it touches any file, so it waits, with a deadline,
  until the kernel has released every earlier worker's files.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from .errors import EngineError

logger = logging.getLogger(__name__)

WORKERS_LOCK_FILE = ".workers.lock"
PR_SET_PDEATHSIG = 1  # linux/prctl.h
EARLIER_WORKERS_TIMEOUT = 60.0  # seconds a run waits for an earlier run's workers to be gone (they die within one)

_guard_forks = False  # while the executor runs: every child forked by this process dies with it
_forking_pid: Optional[int] = None
_worker_lock_handle = None  # this worker's shared lock, held until the process ends
_watched: Optional[int] = None


def die_with_parent(parent: int) -> str:
    """End this process when ``parent`` (its parent now) dies; returns how ("pdeathsig", "watchdog")."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                if os.getppid() != parent:  # the parent died before the request: nobody would send the signal
                    os._exit(1)
                return "pdeathsig"
        except (OSError, AttributeError):
            pass
    _watch_parent(parent)
    return "watchdog"


def _watch_parent(parent: int, poll_seconds: float = 0.5) -> None:
    global _watched
    if _watched == os.getpid():
        return
    _watched = os.getpid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="mres-engine-parent-watchdog", daemon=True).start()


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _guard_forks
    if _guard_forks and _forking_pid is not None:
        _guard_forks = False  # the child's own children are its business (the forkserver re-enables it)
        die_with_parent(_forking_pid)


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)


def guard_forks(enabled: bool = True) -> None:
    """Make every child this process forks from now on die with it (``enabled``), or stop doing so."""
    global _guard_forks
    _guard_forks = enabled


@contextmanager
def children_die_with_this_process(start_method: str) -> Iterator[None]:
    """While the block runs, every process forked for the executor dies with this one.

    With ``forkserver`` the pool's workers are forked by the forkserver: it imports
    :mod:`mres_engine.forkserver_preload`, which applies the same rule there.
    """
    if start_method == "forkserver":
        import multiprocess.forkserver

        preload = ["__main__", "mres_engine.forkserver_preload"]
        multiprocess.forkserver.set_forkserver_preload(preload)  # used when the forkserver starts (once per process)
    guard_forks(True)
    try:
        yield
    finally:
        guard_forks(False)


def hold_worker_lock(out: str) -> None:
    """In a worker process: hold a shared lock on ``OUT/.workers.lock`` until the process ends (once per process)."""
    global _worker_lock_handle
    if _worker_lock_handle is not None:
        return
    try:
        import fcntl
    except ImportError:  # Windows: no lock
        return
    handle = open(os.path.join(out, WORKERS_LOCK_FILE), "a+")
    fcntl.lockf(handle, fcntl.LOCK_SH)  # waits only while a starting run checks the file (a moment)
    _worker_lock_handle = handle


def wait_for_earlier_workers(out: str, timeout: float = EARLIER_WORKERS_TIMEOUT, poll_seconds: float = 0.1) -> None:
    """Return once no process holds ``OUT/.workers.lock`` (no worker of an earlier run is alive); raise after ``timeout``.

    Call it holding ``OUT/.lock``: no worker of this run exists yet, so any holder is an earlier run's.
    """
    try:
        import fcntl
    except ImportError:
        return
    os.makedirs(out, exist_ok=True)
    deadline = time.monotonic() + timeout
    logged = False
    with open(os.path.join(out, WORKERS_LOCK_FILE), "a+") as handle:
        while True:
            try:
                fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if time.monotonic() >= deadline:
                    raise EngineError(
                        f"output_dir {os.path.abspath(out)} is still written by worker processes of an earlier run (they "
                        f"hold {os.path.join(os.path.abspath(out), WORKERS_LOCK_FILE)}; `fuser -v` on it names them). Stop "
                        "them, or wait for them to end, and run again."
                    ) from None
                if not logged:
                    logger.info("waiting for the worker processes of an earlier run of %s to end", out)
                    logged = True
                time.sleep(poll_seconds)
                continue
            fcntl.lockf(handle, fcntl.LOCK_UN)
            return
