"""The manifest step reads the detection JSON streaming and writes the same files as the first reader did.

The golden files in ``data/manifest_golden/`` were written by the engine's first reader
(``json.load`` of the whole file, every record held) on :func:`odd_detection_json`; the streaming
reader must write the same shard manifests byte for byte, whatever the order of the JSON's keys.
"""

import json
import os
import subprocess
import sys

import pytest

from manifest_fixture import GOLDEN_DIR, GOLDEN_IMAGE_DIR, GOLDEN_NUM_SHARDS, odd_detection_json
from mres_engine.manifest import prepare_manifest
from mres_engine.options import RunnerOptions

GOLDEN = os.path.join(os.path.dirname(__file__), "data", GOLDEN_DIR)


def _prepare(tmp_path, text, name="out", num_shards=GOLDEN_NUM_SHARDS):
    annotations = tmp_path / f"{name}.json"
    annotations.write_text(text, encoding="utf-8")
    out = tmp_path / name
    info = prepare_manifest(RunnerOptions(annotations=str(annotations), image_dir=GOLDEN_IMAGE_DIR, output_dir=str(out),
                                          num_shards=num_shards, source="objects365"))
    return out, info


@pytest.mark.parametrize("annotations_first", [False, True], ids=["images-first", "annotations-first"])
def test_streaming_manifest_equals_the_first_readers_files(tmp_path, annotations_first):
    out, info = _prepare(tmp_path, odd_detection_json(annotations_first=annotations_first))
    for rank in range(GOLDEN_NUM_SHARDS):
        name = f"{rank:05d}-of-{GOLDEN_NUM_SHARDS:05d}.jsonl"
        assert (out / "manifest" / name).read_bytes() == open(os.path.join(GOLDEN, name), "rb").read(), name
    golden_rejects = open(os.path.join(GOLDEN, "input-rejects.jsonl"), "rb").read().splitlines()
    rejects = (out / "rejects" / "input.jsonl").read_bytes().splitlines()
    assert sorted(rejects) == sorted(golden_rejects)  # the same records (the order follows images, not the file)
    golden_records = [json.loads(line) for name in sorted(os.listdir(GOLDEN)) if name.endswith("-of-00003.jsonl")
                      for line in open(os.path.join(GOLDEN, name), encoding="utf-8")]
    assert info["num_images"] == len(golden_records)
    assert info["num_boxes"] == sum(len(r["boxes"]) for r in golden_records)
