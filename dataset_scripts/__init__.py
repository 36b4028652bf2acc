"""Dataset builders, the shared MRES schema and mask helpers.

The data engine that builds MRES-32M is the separate package ``mres_engine`` (``python -m mres_engine``);
nothing here imports it. What every run shares (Hub pushes, the output-folder lock, the reject log, command-line
helpers, the citation) is the package ``run_support``.

Modules (import what you need; nothing heavy is imported here):

- ``features``: ``MRES_FEATURES`` (one row per image, a list of referents), ``SCHEMA_VERSION``, ``sentences_of``
- ``masks``: the one COCO RLE codec (``encode_mask``, ``decode_mask``, ``to_coco_rle``) on pycocotools
- ``flatten``: ``flatten_referents`` (rows -> one training sample per sentence)
- ``publish``: ``publish`` (Parquet shards + dataset card, local folder or Hub repo); ``load``: ``load_mres_dataset``
- ``safe_pickle``: restricted unpickler for the ``refer`` annotation files
- ``mres_synth``: the procedural MRES-Synth benchmark (``python -m dataset_scripts.mres_synth``)
- ``own_data``: users' own folders (``metadata.jsonl`` or COCO with sentences); ``instructpart``, ``groundingsuite``,
  ``reasonseg``: the other part and reasoning benchmarks (builders in our schema, their metric conventions)
- ``cris_layout``: the CRIS-layout config, folders, split generators and reader
- ``refcoco_m``: ``RefCOCOm`` builder (CRIS layout); ``refcoco``: ``RefCOCO`` builder (refer or CRIS layout)
"""

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the six packages
