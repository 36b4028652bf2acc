"""The data engine that builds MRES-32M-style data from detection boxes (``python -m mres_engine``).

Shaped as a datatrove pipeline, one folder per role:

- ``readers/``: what the driver reads before any task runs: the detection manifest (``detection``),
  the Hub export (``hub_export``), and the cut into one input file per shard (``manifest``);
- ``stages/``: one module per stage, in the paper's order: ``load_images``, ``object_masks`` (SAM),
  ``part_vocabulary`` (LLM), ``part_masks`` (detector + SAM, or SAM 3), ``captions`` (dense
  captioner), ``clip_filter`` (CLIPScore); ``stages.base`` is their interface and
  ``stages.build.build_stages`` builds them from ``options``;
- ``writers/``: the shard writer (Parquet parts under temporary names) and the commit (the files
  renamed, the shard record written last).

``records`` is the typed per-image record the stages pass along (:class:`~mres_engine.records.ImageRecord`)
and its conversion to a dataset row; ``backends`` holds what stages share (the SAM box segmenters,
the chat clients, the one lazy model loader). The runner: ``options`` (runner and stage settings),
``shard`` (one shard task: read, stages, write, commit), ``progress``, ``executors`` (datatrove:
local, Slurm, Ray; GPU pinning), ``workers`` (the local workers die with the driver), ``finalize``
(exactly-once check, stats, card), ``run`` (the whole run); ``layout`` (the output folder and its
file protocol), ``stats`` (per-stage accounting), ``errors``, ``evaluation`` (an output against
ground truth). Nothing heavy is imported here.
"""

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the six packages
