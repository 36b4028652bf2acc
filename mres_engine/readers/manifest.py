"""The input of a run: the detection manifest read once, in the driver, and cut into one input file per shard.

Shard ``rank`` is the contiguous slice ``rank`` of the manifest's records sorted by image id, cut
into ``num_shards`` slices, so a shard's images depend on nothing but the manifest and the shard
count. Each slice is written to ``manifest/NNNNN-of-NNNNN.jsonl`` (see :mod:`mres_engine.layout`),
the input's own rejects to ``rejects/input.jsonl``, and ``manifest/manifest.json`` last. The
detection JSON is read streaming (``ijson``, see
:func:`~mres_engine.readers.detection.stream_detection_manifest`): the submitting node holds no JSON
tree and no record list, only the boxes in typed arrays (about 60 bytes per box), and writes each
shard's records as it makes them; a shard task reads its own slice only (:func:`read_shard_input`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Optional

from run_support.rejects import RejectLog

from .. import layout
from ..errors import EngineInputError
from ..options import RunnerOptions
from ..records import ImageRecord, image_path
from .detection import stream_detection_manifest
from .hub_export import export_hub_input

logger = logging.getLogger(__name__)


def shard_slice(num_items: int, rank: int, num_shards: int) -> tuple[int, int]:
    """``[start, stop)`` of shard ``rank``: contiguous, sizes differing by at most one."""
    return rank * num_items // num_shards, (rank + 1) * num_items // num_shards


def read_shard_input(out: str, rank: int, num_shards: int) -> list[ImageRecord]:
    """The records of shard ``rank``, as the driver wrote them (``manifest/NNNNN-of-NNNNN.jsonl``)."""
    return [ImageRecord.from_manifest(line) for line in layout.read_jsonl(layout.shard_manifest_path(out, rank, num_shards))]


IMAGES_CHECKED = 32  # images of the manifest, spread over its shards, of which at least one must exist


def check_images_exist(out: str, num_shards: int, image_dir: Optional[str], image_root: Optional[str] = None,
                       annotations: Optional[str] = None) -> None:
    """Refuse a manifest none of whose first images exists (a forgotten or wrong ``--image_dir``), naming one.

    The first images of every shard are looked at (:data:`IMAGES_CHECKED` in all), before anything is recorded:
    otherwise every image would be rejected as missing and the run would end with a finished 0-row dataset.
    One image found is enough: a few missing ones are the stages' rejects, as usual.
    """
    per_shard = max(1, -(-IMAGES_CHECKED // num_shards))
    sample = []
    for rank in range(num_shards):
        with open(layout.shard_manifest_path(out, rank, num_shards), encoding="utf-8") as f:
            for line, _ in zip(f, range(per_shard)):
                sample.append(json.loads(line))
        if len(sample) >= IMAGES_CHECKED:
            break
    if not sample or any(os.path.isfile(image_path(record["file_name"], image_root)) for record in sample):
        return
    path = image_path(sample[0]["file_name"], image_root)
    where = (f"the folder file_name is relative to, given as {image_dir}" if image_dir else
             f"not given: file_name is taken relative to the working folder {os.getcwd()}")
    raise EngineInputError(annotations, f"none of the {len(sample)} images looked at exists (e.g. {path}): check --image_dir "
                                        f"({where})")


def prepare_manifest(options: RunnerOptions, image_root: Optional[str] = None, check_images: bool = True) -> dict[str, Any]:
    """Read the detection manifest once and write one input file per shard (skipped when done before).

    The input's own rejects (boxes skipped or clipped by the manifest reader) go to
    ``rejects/input.jsonl``. Returns ``manifest/manifest.json``'s content. An input with no box to segment,
    or none of whose first images exists (:func:`check_images_exist`; ``image_root``: the stages' own image
    folder, if any), is refused (:class:`~mres_engine.errors.EngineInputError`) before the manifest is recorded;
    ``check_images=False`` skips the second check (a reader's test without the images).
    """
    out = options.output_dir
    info = layout.read_manifest_info(out)
    if info is not None:
        if info["num_shards"] != options.num_shards:
            raise ValueError(
                f"{out} was started with --num_shards {info['num_shards']}; rerun with the same shard count "
                f"(got {options.num_shards}) or choose a new --output_dir"
            )
        return info
    if options.hub_dataset:
        if options.annotations:
            raise ValueError("give --annotations or --hub_dataset, not both")
        options = export_hub_input(options)
    if not options.annotations:
        raise ValueError("--annotations (a COCO/Objects365 detection JSON) or --hub_dataset is required to start a run")
    input_rejects = os.path.join(out, layout.REJECTS_DIR, layout.INPUT_REJECTS)
    os.makedirs(os.path.dirname(input_rejects), exist_ok=True)
    tmp = layout.temporary_path(input_rejects)
    log = RejectLog(tmp, stage="input", report_path=input_rejects, distinct_fixes=False)  # a box is fixed once at most
    try:
        # absolute: a shard task may run in another working folder, and its rejects name images relative to this one
        image_dir = os.path.abspath(options.image_dir) if options.image_dir else None
        boxes = stream_detection_manifest(options.annotations, image_dir, rejects=log, source=options.source)
        num_images, num_boxes = len(boxes), 0
        for rank in range(options.num_shards):
            start, stop = shard_slice(num_images, rank, options.num_shards)
            with layout.atomic_text(layout.shard_manifest_path(out, rank, options.num_shards)) as f:
                for record in boxes.records(start, stop):
                    num_boxes += len(record.boxes)
                    f.write(json.dumps(record.to_manifest(), sort_keys=True) + "\n")
        del boxes
    except BaseException:
        log.close(log=False)
        raise
    summary = log.close()
    layout.commit(tmp, input_rejects)
    if num_boxes == 0:
        skipped = ", ".join(f"{reason}: {count}" for reason, count in log.reasons.most_common())
        raise EngineInputError(options.annotations, f"no box to segment in {num_images} image{'' if num_images == 1 else 's'} "
                                                    f"({f'every box skipped: {skipped}' if skipped else 'no annotation'}); "
                                                    "the engine needs detection boxes (annotations with bbox and category_id)")
    if check_images:
        check_images_exist(out, options.num_shards, options.image_dir, image_root, options.annotations)
    info = {
        "num_shards": options.num_shards,
        "num_images": num_images,
        "num_boxes": num_boxes,
        "annotations": os.path.abspath(options.annotations),
        "image_dir": os.path.abspath(options.image_dir) if options.image_dir else None,
        "split": options.split,
        "input_summary": summary,
    }
    layout.write_json_atomic(os.path.join(out, layout.MANIFEST_DIR, layout.MANIFEST_INFO), info)
    logger.info("manifest: %d images in %d shards; %s", num_images, options.num_shards, summary)
    return info
