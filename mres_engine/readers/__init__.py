"""What the engine reads, in the driver, before any shard task runs (datatrove's ``readers`` in name; see below).

- :mod:`~mres_engine.readers.detection`: a COCO/Objects365 detection JSON, read streaming into
  :class:`~mres_engine.records.ImageRecord`\\ s, every skipped or clipped box accounted for;
- :mod:`~mres_engine.readers.hub_export`: a ``datasets`` detection dataset (``--hub_dataset``) exported
  once to that COCO layout;
- :mod:`~mres_engine.readers.manifest`: the records cut into one input file per shard
  (:func:`~mres_engine.readers.manifest.prepare_manifest`), and a shard's records read back in its task
  (:func:`~mres_engine.readers.manifest.read_shard_input`).

They are not datatrove ``BaseReader`` steps: a ``BaseReader`` runs inside each task and shards its input
by files, whereas a detection JSON is one file that must be read whole (boxes and images may come in any
order) before the images are cut into shards, once, by the driver.
"""
