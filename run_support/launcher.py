"""A training worker ends when the launcher that started it dies.

`accelerate launch` (and `torchrun`) start the workers as child processes of the launcher: `--multi_gpu`
runs torch's elastic agent inside the `accelerate launch` process itself, the single-process launcher runs one
`subprocess.Popen`. When the launcher is killed (SIGKILL, an OOM kill, a lost node) nothing tells its workers:
they are re-parented and keep training and writing checkpoints, beside any run started to replace them.

`exit_with_launcher` starts a daemon thread that polls the worker's parent pid; when the launcher is gone (the
worker has been re-parented), it logs why and ends the worker with SIGTERM (then `os._exit` if a handler swallowed
it). A watchdog rather than `prctl(PR_SET_PDEATHSIG)`: the kernel sends that signal when the *thread* that forked
the worker exits, so a launcher that spawns from a short-lived thread would kill healthy workers; a pid poll
follows the process and works on macOS too. The thread waits in `time.sleep` and needs no GIL in between, and
torch collectives release the GIL, so it also fires while a worker waits on a peer that died with the launcher.

It only starts when a launcher is recognised from the environment (torch elastic's `TORCHELASTIC_RUN_ID`, which
`accelerate launch --multi_gpu` and `torchrun` set, or accelerate's `ACCELERATE_DYNAMO_BACKEND`, which every
`accelerate launch` sets): a plain `python examples/train.py` under `nohup` must survive its shell.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

logger = logging.getLogger(__name__)

LAUNCHER_ENV = ("TORCHELASTIC_RUN_ID", "ACCELERATE_DYNAMO_BACKEND")
_started: dict[int, threading.Thread] = {}  # pid → watchdog (a forked child starts its own)


def launched_by_a_launcher(environ=None) -> bool:
    environ = os.environ if environ is None else environ
    return any(name in environ for name in LAUNCHER_ENV)


def exit_with_launcher(poll_seconds: float = 1.0, grace_seconds: float = 30.0, force: bool = False):
    """Start (once per process) the watchdog that ends this worker when its launcher dies; returns the thread.

    Returns None when no launcher started this process (unless `force`), or when the parent is already gone.
    """
    pid = os.getpid()
    if pid in _started:
        return _started[pid]
    if not (force or launched_by_a_launcher()):
        return None
    launcher = os.getppid()
    if launcher <= 1:
        return None
    thread = threading.Thread(
        target=_watch, args=(launcher, poll_seconds, grace_seconds), name="unires-launcher-watchdog", daemon=True
    )
    thread.start()
    _started[pid] = thread
    return thread


def _watch(launcher: int, poll_seconds: float, grace_seconds: float) -> None:
    while os.getppid() == launcher:
        time.sleep(poll_seconds)
    message = f"unires: the launcher (pid {launcher}) of worker pid {os.getpid()} died; stopping this worker.\n"
    try:
        sys.stderr.write(message)
        sys.stderr.flush()
    except Exception:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_seconds)
    os._exit(143)  # SIGTERM was caught and the process is still here
