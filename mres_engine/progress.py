"""Progress of a run: each shard task notes how many images went through its stages; one bar reads the notes.

A note is ``logs/progress/NNNNN`` (see :mod:`mres_engine.layout`), replaced atomically about once
a second by the task of shard ``NNNNN``; :class:`RunProgress` adds them to the complete shards'
counts, so one bar covers the run on this machine whatever executor runs the tasks.
"""

from __future__ import annotations

import os
import threading

from tqdm.auto import tqdm

from . import layout

PROGRESS_INTERVAL = 1.0  # seconds between a task's progress notes


def progress_path(out: str, rank: int) -> str:
    return os.path.join(out, layout.LOGS_DIR, "progress", f"{rank:05d}")


def write_progress(out: str, rank: int, images_done: int) -> None:
    """Note how many images of shard ``rank`` went through the stages (read by :class:`RunProgress`)."""
    path = progress_path(out, rank)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = layout.temporary_path(path)
    with open(tmp, "w") as f:
        f.write(str(images_done))
    os.replace(tmp, path)


def images_done(out: str, num_shards: int) -> int:
    """Images through the stages so far: whole complete shards, plus the progress notes of running ones."""
    complete = layout.completed_shards(out)
    total = sum(record["images_in"] for record in complete.values())
    for rank in range(num_shards):
        if rank not in complete:
            try:
                with open(progress_path(out, rank)) as f:
                    total += int(f.read() or 0)
            except (OSError, ValueError):
                pass
    return total


class RunProgress:
    """One progress bar (images, images/s) for the whole run, fed by the shard tasks' progress notes.

    A resumed run starts the bar at what earlier runs finished, so the rate counts this run only.
    """

    def __init__(self, out: str, num_shards: int, total_images: int, interval: float = 2.0, enabled: bool = True):
        self.out, self.num_shards, self.interval = out, num_shards, interval
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.bar = None
        if enabled:
            start = sum(r["images_in"] for r in layout.completed_shards(out).values())
            self.bar = tqdm(total=total_images, initial=start, unit="img", desc="MRES engine", dynamic_ncols=True)

    def _refresh(self) -> None:
        done = min(images_done(self.out, self.num_shards), self.bar.total)
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._refresh()

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self._refresh()
            self.bar.close()
