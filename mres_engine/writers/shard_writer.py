"""The shard writer: one shard's rows into Parquet part files of bounded size, under temporary names.

Two files per part: the rows with images embedded (``data/``, config ``default``) and the same rows
without image bytes but with ``file_name`` (``annotations/``, config ``annotations``). Nothing appears
under a final name before :meth:`ShardWriter.commit`, which :func:`mres_engine.writers.commit.commit_shard`
calls (see :mod:`mres_engine.layout` for the protocol).

Not a datatrove ``DiskWriter``: that class opens each output under its final name through its output
file manager and writes one document at a time, whereas a shard must stay invisible until the whole
shard is written (temporary names, renamed at the commit), and its rows go through ``datasets``'
``ParquetWriter`` so that the files carry the Hugging Face features of :data:`MRES_FEATURES`.
"""

from __future__ import annotations

import os
from typing import Optional

from datasets.arrow_writer import ParquetWriter
from datasets.utils.py_utils import convert_file_size_to_int

from dataset_scripts.features import MRES_FEATURES
from dataset_scripts.publish import annotation_features

from .. import layout
from ..records import ImageRecord


# What a Parquet file costs beyond its rows: footer, page indexes, the Hugging Face features in the
# schema metadata (measured: about 10 KB for MRES_FEATURES); counted so that small bounds hold too.
PARQUET_FILE_OVERHEAD = 16_000


class ShardWriter:
    """Rows of one shard into Parquet part files of bounded size, under temporary names until :meth:`commit`.

    Two files per part: the rows with images embedded (``data/``) and the same rows without image
    bytes but with ``file_name`` (``annotations/``). Row groups have datasets' default size (its
    ``ParquetWriter`` picks it from the features).
    """

    def __init__(self, out: str, split: str, rank: int, num_shards: int, max_shard_size, image_dir: Optional[str]):
        self.out, self.split, self.rank, self.num_shards = out, split, rank, num_shards
        self.max_bytes = convert_file_size_to_int(max_shard_size)
        self.image_dir = os.path.abspath(image_dir) if image_dir else None
        self.annotation_features = annotation_features(MRES_FEATURES)
        self.parts: list[tuple[str, str]] = []  # (temporary, final) of every finished file
        self._writers = None
        self._part_bytes = 0
        self.rows_in_part = 0
        self.rows = 0

    def _file_name(self, record: ImageRecord) -> str:
        name = record.file_name
        if self.image_dir and os.path.isabs(name) and os.path.commonpath([self.image_dir, os.path.abspath(name)]) == self.image_dir:
            return os.path.relpath(name, self.image_dir)
        return name

    def _open_part(self) -> None:
        part = len(self.parts) // 2
        self._writers = []
        for folder, name, features in (
            (layout.DATA_DIR, layout.data_file_name(self.split, self.rank, self.num_shards, part), MRES_FEATURES),
            (layout.ANNOTATIONS_DIR, layout.annotations_file_name(self.split, self.rank, self.num_shards, part), self.annotation_features),
        ):
            final = os.path.join(self.out, folder, name)
            os.makedirs(os.path.dirname(final), exist_ok=True)
            tmp = layout.temporary_path(final)
            self._writers.append((ParquetWriter(features=features, path=tmp), tmp, final, features))
        self._part_bytes = PARQUET_FILE_OVERHEAD
        self.rows_in_part = 0

    def _close_part(self) -> None:
        for writer, tmp, final, _ in self._writers:
            writer.finalize()
            writer.close()
            self.parts.append((tmp, final))
        self._writers = None

    @staticmethod
    def _row_bytes(row: dict) -> int:
        # What the row adds to the file: the image bytes dominate; masks and text follow.
        size = len(row["image"]["bytes"] or b"") + 64
        for ref in row["referents"]:
            size += len(ref["mask"]["counts"]) + sum(len(s) for s in ref["sentences"]) + 128
        return size

    def write(self, record: ImageRecord, row: dict) -> None:
        size = self._row_bytes(row)
        if self._writers is not None and self.rows_in_part and self._part_bytes + size > self.max_bytes:
            self._close_part()
        if self._writers is None:
            self._open_part()
        annotation_row = {k: v for k, v in row.items() if k != "image"}
        annotation_row["file_name"] = self._file_name(record)
        encoded = [features.encode_example(value) for (_, _, _, features), value in zip(self._writers, (row, annotation_row))]
        # Image.encode_example keeps a path instead of the bytes whenever that path exists locally;
        # a published shard must carry the bytes (and no local path).
        encoded[0]["image"] = {"bytes": row["image"]["bytes"], "path": os.path.basename(annotation_row["file_name"])}
        for (writer, *_), value in zip(self._writers, encoded):
            writer.write(value)
        self._part_bytes += size
        self.rows_in_part += 1
        self.rows += 1

    def commit(self) -> list[str]:
        """Finish the last part, rename every file to its final name; returns the final paths (relative to out)."""
        if self._writers is not None:
            self._close_part()
        for tmp, final in self.parts:
            layout.commit(tmp, final)
        return [os.path.relpath(final, self.out) for _, final in self.parts]
