"""Common base of the MRES builders: the shared schema, dataset-card fields and reject accounting."""

from __future__ import annotations

import os
from typing import Optional

import logging

import datasets

from .features import MRES_FEATURES, SCHEMA_VERSION
from .rejects import REJECTS_FILENAME, RejectLog

# The reference paper (MRES, RefCOCO_m, MRES-32M), cited by the builders of its datasets.
UNIRES_CITATION = """@inproceedings{wang2024unveiling,
  title={Unveiling Parts Beyond Objects: Towards Finer-Granularity Referring Expression Segmentation},
  author={Wang, Wenxuan and Yue, Tongtian and Zhang, Yisi and Guo, Longteng and He, Xingjian and Wang, Xinlong and Liu, Jing},
  booktitle={CVPR},
  year={2024}
}"""


logger = logging.getLogger(__name__)


class MRESBuilder(datasets.GeneratorBasedBuilder):
    """A ``GeneratorBasedBuilder`` that emits :data:`MRES_FEATURES` rows and accounts for bad input.

    While ``download_and_prepare`` runs, ``self.rejects`` is a :class:`RejectLog` writing
    ``rejects.jsonl`` into the output folder (beside the generated files); the build ends with
    the summary line ``kept N, fixed N, skipped N``. Subclasses call ``self.rejects.keep()``,
    ``.fix(...)`` and ``.skip(...)`` from ``_generate_examples``.
    """

    VERSION = datasets.Version(SCHEMA_VERSION)
    DESCRIPTION = ""
    HOMEPAGE = ""
    CITATION = ""
    LICENSE = ""

    rejects: Optional[RejectLog] = None
    last_summary: Optional[str] = None

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
        """Where the rejects file of the last build lies (inside the builder's output folder)."""
        return os.path.join(self._output_dir, REJECTS_FILENAME)

    def _download_and_prepare(self, dl_manager, verification_mode, **prepare_split_kwargs):
        # self._output_dir is the temporary ".incomplete" folder here; it is renamed to the final
        # folder afterwards, rejects.jsonl with it.
        final_dir = self._output_dir[: -len(".incomplete")] if self._output_dir.endswith(".incomplete") else self._output_dir
        self.rejects = RejectLog(
            os.path.join(self._output_dir, REJECTS_FILENAME), report_path=os.path.join(final_dir, REJECTS_FILENAME)
        )
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
