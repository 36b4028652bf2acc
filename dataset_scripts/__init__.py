"""Dataset builders, the shared MRES schema and mask helpers.

Modules (import what you need; nothing heavy is imported here):

- ``features``: ``MRES_FEATURES`` (one row per image, a list of referents), ``SCHEMA_VERSION``
- ``masks``: COCO RLE helpers on pycocotools
- ``flatten``: ``flatten_referents`` (rows -> one training sample per sentence)
- ``publish``: ``publish`` (Parquet shards + dataset card, local folder or Hub repo)
- ``rejects``: ``RejectLog`` (skipped/fixed items -> ``rejects.jsonl`` + summary line)
- ``safe_pickle``: restricted unpickler for the ``refer`` annotation files
- ``mres_synth``: the procedural MRES-Synth benchmark (``python -m dataset_scripts.mres_synth``)
- ``refcoco_m``: ``RefCOCOm`` builder (CRIS layout); ``refcoco``: ``RefCOCO`` builder (refer layout)
"""

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the four packages
