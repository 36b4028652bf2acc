"""The manifest step reads the detection JSON streaming and writes the same files as the first reader did.

The golden files in ``data/manifest_golden/`` were written by the engine's first reader
(``json.load`` of the whole file, every record held) on :func:`odd_detection_json`, and the
streaming reader wrote the same shard manifests byte for byte, whatever the order of the JSON's
keys. One deliberate change since: a box side inside the image is no longer rewritten as
``(x + w) - x`` (140 of the fixture's 170 boxes moved by at most 3e-14 and were recorded as
"clipped"); the golden files were rewritten then, with no other difference.
"""

import json
import os
import subprocess
import sys

import pytest

from manifest_fixture import GOLDEN_DIR, GOLDEN_IMAGE_DIR, GOLDEN_NUM_SHARDS, odd_detection_json
from mres_engine.readers.manifest import prepare_manifest
from mres_engine.options import RunnerOptions

GOLDEN = os.path.join(os.path.dirname(__file__), "data", GOLDEN_DIR)


def _prepare(tmp_path, text, name="out", num_shards=GOLDEN_NUM_SHARDS):
    annotations = tmp_path / f"{name}.json"
    annotations.write_text(text, encoding="utf-8")
    out = tmp_path / name
    info = prepare_manifest(RunnerOptions(annotations=str(annotations), image_dir=GOLDEN_IMAGE_DIR, output_dir=str(out),
                                          num_shards=num_shards, source="objects365"),
                            check_images=False)  # the reader alone: the golden manifest's images exist nowhere
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


def test_the_manifest_steps_memory_grows_by_less_than_80_bytes_per_box(tmp_path):
    """Peak memory (tracemalloc: Python objects, arrays and numpy) of the manifest step at two sizes: the
    growth per box is the slope. The first reader held the JSON tree and every record (about 1,500 bytes per box)."""
    from manifest_fixture import write_objects365_like

    script = r"""
import json, sys, tracemalloc
from mres_engine.readers.manifest import prepare_manifest
from mres_engine.options import RunnerOptions
import mres_engine.readers.detection, numpy  # imported before the measure
try:
    import ijson
except ImportError:
    pass
tracemalloc.start()
info = prepare_manifest(RunnerOptions(annotations=sys.argv[1], image_dir="/data", output_dir=sys.argv[2], num_shards=4),
                        check_images=False)  # the reader alone: no image exists
print(json.dumps({"peak": tracemalloc.get_traced_memory()[1], "boxes": info["num_boxes"]}))
"""
    peaks = []
    for images in (300, 1500):
        annotations = tmp_path / f"o365-{images}.json"
        boxes = write_objects365_like(annotations, images)
        result = subprocess.run([sys.executable, "-c", script, str(annotations), str(tmp_path / f"out-{images}")],
                                capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        assert result.returncode == 0, result.stderr[-3000:]
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        assert measured["boxes"] == boxes
        peaks.append((boxes, measured["peak"]))
    (small_boxes, small_peak), (large_boxes, large_peak) = peaks
    per_box = (large_peak - small_peak) / (large_boxes - small_boxes)
    print(f"manifest step: {per_box:.1f} bytes per box")
    assert per_box <= 80, f"{per_box:.0f} bytes per box"


def test_a_box_inside_the_image_is_kept_exactly_and_not_recorded_as_clipped(tmp_path):
    from run_support.rejects import RejectLog
    from mres_engine.readers.detection import read_detection_manifest

    bbox = [27.447954709616162, 98.78572042518124, 65.27574757197075, 50.795578419024615]  # (y + h) - y != h
    manifest = {"images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 200}], "categories": [{"id": 1, "name": "a"}],
                "annotations": [{"id": 1, "image_id": 1, "bbox": bbox, "category_id": 1},
                                {"id": 2, "image_id": 1, "bbox": [190.5, -3.25, 20, 10.5], "category_id": 1}]}
    log = RejectLog(stage="input")
    (record,) = read_detection_manifest(manifest, rejects=log)
    assert record.boxes[0]["bbox"] == bbox
    assert record.boxes[1]["bbox"] == [190.5, 0.0, 9.5, 7.25]
    assert [(r["item_id"], r["reason"]) for r in log.records] == [("2", "box clipped to the image")]
