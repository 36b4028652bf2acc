"""The data engine that builds MRES-32M-style data from detection boxes (``python -m mres_engine``).

``stages/`` holds one module per stage, in the paper's order: ``input`` (detection manifest,
images), ``object_masks`` (SAM), ``part_vocabulary`` (LLM), ``part_masks`` (detector + SAM, or
SAM 3), ``captions`` (dense captioner), ``clip_filter`` (CLIPScore); ``stages.base`` is the
interface they implement and ``stages.build.build_stages`` builds them from ``options``. What
stages share lives in ``backends`` (the SAM box segmenters, the chat clients, the one lazy model
loader); ``records`` is the per-image record they pass along and its conversion to a dataset row.

The runner, one module per role: ``options`` (runner and stage settings), ``manifest`` (the input
cut into shards), ``shard`` (one shard through the stages, written exactly once), ``progress``,
``executors`` (datatrove: local, Slurm, Ray; GPU pinning), ``finalize`` (exactly-once check, stats,
card), ``run`` (the whole run); ``layout`` (the output folder and its file protocol), ``stats``
(per-stage accounting), ``evaluation`` (an output against ground truth), ``testing_utils`` (tiny
models for tests and benchmarks). Nothing heavy is imported here.
"""

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the five packages
