"""What a shard task writes, by the exactly-once rule of :mod:`mres_engine.layout`:

- :mod:`~mres_engine.writers.shard_writer`: the rows, as Parquet part files of bounded size under
  temporary names (:class:`~mres_engine.writers.shard_writer.ShardWriter`);
- :mod:`~mres_engine.writers.commit`: the commit (every file renamed, then the shard record written
  last) and why a shard has two completion markers (the engine's and datatrove's).
"""
