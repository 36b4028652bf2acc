"""The engine's stages, one module each, in the paper's order: ``load_images``, ``object_masks``,
``part_vocabulary``, ``part_masks``, ``captions``, ``clip_filter``.

``base`` is the interface they implement (:class:`~mres_engine.stages.base.EngineStage`,
:class:`~mres_engine.stages.base.Reject`, :class:`~mres_engine.stages.base.StageOutput`) and
``build.build_stages`` builds them from the options. No stage imports another: what they share
lives in :mod:`mres_engine.backends` and :mod:`mres_engine.records`. Nothing is imported here, so
that ``stages.base`` stays light.
"""
