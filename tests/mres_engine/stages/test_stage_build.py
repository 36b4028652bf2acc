"""build_stages: every stage built from StageOptions alone (models loaded by path), in the paper's order."""

import dataclasses

from datasets import Dataset
from transformers import HfArgumentParser

from dataset_scripts.features import MRES_FEATURES
from mres_engine.options import StageOptions
from mres_engine.records import to_mres_row
from mres_engine.stages.build import build_stages
from mres_engine.readers.detection import read_detection_manifest
from tiny_models.engine import FakeChatServer, save_tiny_stage_models, tiny_chat_answer, write_synth_detection_set


def test_every_option_has_help_and_parses():
    for option in dataclasses.fields(StageOptions):
        assert option.metadata.get("help"), option.name
    (options,) = HfArgumentParser(StageOptions).parse_args_into_dataclasses(["--sam_min_iou", "0.5", "--part_masks", "sam3"])
    assert options.sam_min_iou == 0.5 and options.part_masks == "sam3" and options.sam_min_stability == 0.95


def test_stages_from_options_run_end_to_end_on_synth_detections(tmp_path):
    annotations_json, image_dir, truth = write_synth_detection_set(tmp_path / "synth", num_images=2)
    with FakeChatServer(tiny_chat_answer) as server:
        options = save_tiny_stage_models(tmp_path / "models", server.url)
        stages = build_stages(options)
        assert [s.name for s in stages] == ["load_images", "object_masks", "part_vocabulary", "part_masks", "captions", "clip_filter"]
        records = read_detection_manifest(annotations_json, image_dir, source="mres-synth")
        rejects = []
        for stage in stages:
            out = stage(records)
            records, rejects = out.records, rejects + out.rejects
    assert [r.stage for r in rejects if r.referent_id is None] == []
    assert len(records) == 2
    rows = [to_mres_row(r) for r in records]
    dataset = Dataset.from_list(rows, features=MRES_FEATURES)
    for row, record in zip(dataset, records):
        objects = [r for r in row["referents"] if r["granularity"] == "object"]
        parts = [r for r in row["referents"] if r["granularity"] == "part"]
        assert len(objects) == len(record.boxes)
        assert parts and {p["parent_id"] for p in parts} <= {o["referent_id"] for o in objects}
        assert all(r["sentences"] == ["a small thing"] for r in row["referents"])
        assert all(r["scores"]["clip"] is not None and r["scores"]["sam_iou"] is not None for r in row["referents"])
        assert all(p["scores"]["detector"] is not None for p in parts)
