"""Common base of the MRES builders: the shared schema, dataset-card fields and reject accounting."""

from __future__ import annotations

import copy
import logging
import os
from typing import Optional

import datasets

from .features import MRES_FEATURES, SCHEMA_VERSION
from run_support.rejects import REJECTS_FILENAME, RejectLog

logger = logging.getLogger(__name__)


class MRESBuilder(datasets.GeneratorBasedBuilder):
    """A ``GeneratorBasedBuilder`` that emits :data:`MRES_FEATURES` rows and accounts for bad input.

    While ``download_and_prepare`` runs, ``self.rejects`` is a :class:`RejectLog` writing
    ``rejects.jsonl`` into the output folder (beside the generated files), or to ``rejects_path``
    when given; the build ends with the summary line ``kept N, fixed N, skipped N``, kept in
    ``last_summary``. Subclasses call ``self.rejects.keep()``, ``.fix(...)`` and ``.skip(...)``
    from ``_generate_examples``.

    The config's ``version`` is the schema version (:data:`SCHEMA_VERSION`), part of the cache
    folder. Like every ``datasets`` builder, a second ``download_and_prepare`` with the same config
    reuses the cached build without reading the inputs again (``last_summary`` says so); pass
    ``download_mode="force_redownload"`` to rebuild after changing an input.

    Args:
        rejects_path: where to write the rejects file (default: inside the builder's cache folder).
        *args, **kwargs: those of ``datasets.GeneratorBasedBuilder`` (config fields included).
    """

    VERSION = datasets.Version(SCHEMA_VERSION)
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""
    LICENSE = ""

    rejects: Optional[RejectLog] = None
    last_summary: Optional[str] = None

    def __init__(self, *args, rejects_path: Optional[str | os.PathLike] = None, **kwargs):
        # not a config field: where the log goes must not change the cache folder
        self._rejects_target = os.path.abspath(os.fspath(rejects_path)) if rejects_path is not None else None
        super().__init__(*args, **kwargs)

    def _create_builder_config(self, *args, **kwargs):
        builder_config, config_id = super()._create_builder_config(*args, **kwargs)
        # Predefined configs (BUILDER_CONFIGS) carry datasets' default 0.0.0: give every config the
        # schema version, so that the cache folder changes with the schema.
        if str(builder_config.version) != str(self.VERSION):
            builder_config = copy.deepcopy(builder_config)
            builder_config.version = datasets.Version(str(self.VERSION))
        return builder_config, config_id

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=self.DESCRIPTION,
            features=MRES_FEATURES,
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            license=self.LICENSE,
        )

    @property
    def rejects_path(self) -> str:
        """Where the rejects file of the last build lies (``rejects_path``, else inside the builder's output folder)."""
        return self._rejects_target or os.path.join(self._output_dir, REJECTS_FILENAME)

    def download_and_prepare(self, *args, **kwargs):
        self.last_summary = None
        super().download_and_prepare(*args, **kwargs)
        if self.last_summary is None:  # datasets found a finished build and returned before reading anything
            self.last_summary = (
                f"reused the cached build in {self._output_dir}; inputs not read again "
                "(download_mode='force_redownload' rebuilds)"
            )
            logger.warning(self.last_summary)

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        if self._rejects_target:
            self.rejects = RejectLog(self._rejects_target)
        else:
            # self._output_dir is the temporary ".incomplete" folder here; it is renamed to the final
            # folder afterwards, rejects.jsonl with it.
            final_dir = self._output_dir.removesuffix(".incomplete")
            self.rejects = RejectLog(
                os.path.join(self._output_dir, REJECTS_FILENAME), report_path=os.path.join(final_dir, REJECTS_FILENAME)
            )
        # The only split sizes on record come from an earlier build of these local files; a rebuild
        # after an input changed must not be checked against them (NonMatchingSplitsSizesError).
        self.info.splits = None
        try:
            super()._download_and_prepare(dl_manager, verification_mode, **prepare_split_kwargs)
        finally:
            self.last_summary = self.rejects.close()

    def as_dataset(self, split=None, **kwargs):
        """Like ``DatasetBuilder.as_dataset``; with ``split=None``, splits left empty by rejects are omitted (and logged)."""
        if split is None and self.info.splits:
            empty = [name for name, info in self.info.splits.items() if not info.num_examples]
            if empty:
                logger.warning("split(s) %s have no row left after skipping bad items; omitted", empty)
                return datasets.DatasetDict({
                    name: super(MRESBuilder, self).as_dataset(split=name, **kwargs)
                    for name in self.info.splits if name not in empty
                })
        return super().as_dataset(split=split, **kwargs)

    def _reject_log(self) -> RejectLog:
        # _generate_examples may also be driven directly (e.g. by as_streaming_dataset) without
        # download_and_prepare: then keep the accounting in memory.
        if self.rejects is None or self.rejects._file is None and self.rejects.path is not None:
            self.rejects = RejectLog(None)
        return self.rejects
