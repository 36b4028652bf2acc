"""The captioning schema every fine-tune builder emits, and the builder base class."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass

import datasets

from run_support.rejects import RejectLog

CAPTION_FEATURES = datasets.Features(
    {
        "image": datasets.Image(),
        "image_id": datasets.Value("string"),
        "bbox": datasets.Sequence(datasets.Value("float32"), length=4),  # [x, y, w, h] pixels
        "granularity": datasets.Value("string"),  # "image" | "object" | "part"
        "caption": datasets.Value("string"),
        "source": datasets.Value("string"),
    }
)


@dataclass
class CaptionBuilderConfig(datasets.BuilderConfig):
    """Config of a fine-tune data builder.

    Args:
        rejects_path: JSONL file where skipped records are appended with their reason.
    """

    rejects_path: str | None = None


class CaptionBuilder(datasets.GeneratorBasedBuilder):
    """Base of the builders that read a public release from ``data_dir`` into ``CAPTION_FEATURES``."""

    BUILDER_CONFIG_CLASS = CaptionBuilderConfig
    SOURCE = ""

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=self.__doc__, features=CAPTION_FEATURES)

    def _data_dir(self) -> str:
        data_dir = self.config.data_dir
        if not data_dir or not os.path.isdir(data_dir):
            raise ValueError(f"{type(self).__name__} needs data_dir= pointing at the downloaded release; got {data_dir!r}.")
        return data_dir

    def _reject_log(self, split: str) -> RejectLog:
        return RejectLog(self.config.rejects_path, stage=f"{self.SOURCE}/{split}", append=True)

    def _example(self, image_path: str, image_id, bbox, granularity: str, caption: str) -> dict:
        """One record of ``CAPTION_FEATURES`` from this builder's source."""
        return {
            "image": image_path,
            "image_id": str(image_id),
            "bbox": [float(v) for v in bbox],
            "granularity": granularity,
            "caption": caption,
            "source": self.SOURCE,
        }


def read_json(path: str):
    """Read a JSON annotation file, naming it in the error when it is broken."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"Cannot read annotation file {path!r}: {error}") from error


def iter_json_array(path: str, chunk_size: int = 1 << 20):
    """Yield the elements of a file holding one JSON array, one at a time, reading ``chunk_size``
    characters at a time: a multi-gigabyte annotation file never sits in memory whole.

    Raises:
        ValueError: naming the file when it is not a JSON array or is cut off.
    """
    decoder = json.JSONDecoder()
    try:
        with open(path, encoding="utf-8") as handle:
            buffer, at_end = "", False
            while not buffer.strip() and not at_end:  # up to the opening bracket
                more = handle.read(chunk_size)
                buffer, at_end = buffer + more, not more
            position = len(buffer) - len(buffer.lstrip())
            if buffer[position:position + 1] != "[":
                raise ValueError("not a JSON array")
            position += 1
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n,":
                    position += 1
                if position < len(buffer) and buffer[position] == "]":
                    return
                try:
                    element, end = decoder.raw_decode(buffer, position)
                    complete = end < len(buffer) or at_end
                except json.JSONDecodeError:
                    complete = False
                if complete:
                    yield element
                    position = end
                    continue
                if at_end:
                    raise ValueError(f"cut off at character {position} of the current chunk")
                more = handle.read(chunk_size)
                at_end = not more
                buffer, position = buffer[position:] + more, 0
    except (OSError, ValueError) as error:
        raise ValueError(f"Cannot read annotation file {path!r}: {error}") from error


def box_problem(bbox) -> str | None:
    """Why an ``[x, y, w, h]`` annotation box cannot be used, or None when it can."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return f"invalid box: {bbox!r} is not [x, y, w, h]"
    try:
        values = [float(v) for v in bbox]
    except (TypeError, ValueError):
        return f"invalid box: {bbox!r} has a non-numeric coordinate"
    if not all(math.isfinite(v) for v in values):
        return f"invalid box: {bbox!r} has a NaN or infinite coordinate"
    if values[2] <= 0 or values[3] <= 0:
        return f"empty box: {bbox!r} has zero or negative size"
    return None


def find_image(data_dir: str, file_name: str, folders: tuple[str, ...] = ("",)) -> str | None:
    """First existing ``data_dir/folder/file_name`` (also trying the bare file name), or None."""
    candidates = []
    for folder in folders:
        candidates.append(os.path.join(data_dir, folder, file_name))
        candidates.append(os.path.join(data_dir, folder, os.path.basename(file_name)))
    return next((path for path in candidates if os.path.isfile(path)), None)
