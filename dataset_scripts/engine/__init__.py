"""The data engine that builds MRES-32M-style data from detection boxes (``python -m dataset_scripts.engine``).

Stages (one module each): ``input`` (detection manifest, images), ``object_masks`` (SAM),
``part_vocabulary`` (LLM), ``part_masks`` (detector + SAM, or SAM 3), ``captions`` (dense
captioner), ``clip_filter`` (CLIPScore); ``options`` holds their settings and ``stages.build_stages`` builds them in order.
The runner: ``pipeline`` (datatrove pipeline, one task per shard, GPU pinning), ``shards``
(output layout and the exactly-once file protocol), ``stats`` (per-stage accounting),
``evaluate`` (an output against ground truth). Nothing heavy is imported here.
"""
