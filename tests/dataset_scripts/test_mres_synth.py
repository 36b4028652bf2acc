"""MRES-Synth: determinism, unambiguous expressions, exact masks, held-out combinations, Hub folder."""

import hashlib
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
from datasets import load_dataset

from dataset_scripts.features import MRES_FEATURES
from dataset_scripts.masks import decode_mask, mask_bbox
from dataset_scripts.mres_synth import (
    CATEGORIES, COLOURS, MRESSynth, MRESSynthConfig, build_mres_synth, generate_row, generate_scene,
    held_out_combinations, parse_expression, resolve, scene_for,
)

CONFIG = MRESSynthConfig(name="t", image_size=96)


def test_vocabulary_breadth_and_shared_parts():
    assert len(CATEGORIES) >= 8 and len(COLOURS) >= 6
    owners = lambda part: {c for c, cat in CATEGORIES.items() if part in cat.part_names}
    assert {"car", "bus", "truck"} <= owners("wheel")
    assert {"house", "car", "bus"} <= owners("window")
    assert {"house", "car"} <= owners("roof")


def test_same_arguments_same_bytes_other_seed_other_scene():
    a, b = generate_row("train", 7, CONFIG), generate_row("train", 7, CONFIG)
    assert a == b and a["image"]["bytes"] == b["image"]["bytes"]
    other = generate_row("train", 7, MRESSynthConfig(name="t", seed=1))
    assert other["image"]["bytes"] != a["image"]["bytes"]
    assert generate_row("validation", 7, CONFIG)["image"]["bytes"] != a["image"]["bytes"]


@pytest.mark.parametrize("split", ["train", "test_unseen"])
def test_every_sentence_resolves_to_exactly_its_referent(split):
    checked = 0
    for index in range(40):
        row = generate_row(split, index, CONFIG)
        scene, _ = scene_for(split, index, CONFIG)
        for ref in row["referents"]:
            obj_index = int(ref["referent_id"].split("/")[1][1:])
            part = ref["category"] if ref["granularity"] == "part" else None
            assert 1 <= len(ref["sentences"]) <= 3
            for sentence in ref["sentences"]:
                assert resolve(parse_expression(sentence), scene) == [(obj_index, part)], sentence
                checked += 1
    assert checked > 500


def test_part_expressions_refer_to_all_instances_and_use_plurals():
    seen_plural = False
    for index in range(30):
        row = generate_row("train", index, CONFIG)
        scene, _ = scene_for("train", index, CONFIG)
        for ref in row["referents"]:
            if ref["category"] == "wheel":
                obj = scene.objects[int(ref["referent_id"].split("/")[1][1:])]
                # the union of every wheel, so as many blobs as the object has wheels
                assert np.array_equal(decode_mask(ref["mask"]), obj.part_masks["wheel"])
                assert all("wheels" in s for s in ref["sentences"])
                seen_plural = True
    assert seen_plural


def test_masks_are_exact_and_parts_lie_inside_their_object():
    for index in range(25):
        row = generate_row("validation", index, CONFIG)
        refs = {r["referent_id"]: r for r in row["referents"]}
        for ref in refs.values():
            mask = decode_mask(ref["mask"])
            assert mask.shape == (96, 96) and mask.any()
            assert ref["bbox"] == mask_bbox(ref["mask"])
            if ref["granularity"] == "part":
                parent = refs[ref["parent_id"]]
                assert parent["granularity"] == "object" and ref["object_category"] == parent["category"]
                assert not (mask & ~decode_mask(parent["mask"])).any()
                assert mask.sum() >= 6  # no part is a speck
        objects = [decode_mask(r["mask"]) for r in refs.values() if r["granularity"] == "object"]
        assert (np.sum(objects, axis=0) <= 1).all()  # objects never overlap


def test_rendered_colours_match_masks():
    scene = generate_scene(5)
    for obj in scene.objects:
        main = {"car": "body", "bus": "body", "truck": "cargo box", "house": "wall", "tree": "crown",
                "boat": "hull", "person": "torso", "mushroom": "cap"}[obj.category]
        pixels = scene.image[obj.part_masks[main]]
        assert (pixels == np.array(COLOURS[obj.colour], np.uint8)).all()
        assert obj.size in ("small", "large")
        x, y, w, h = obj.box
        assert 0.15 * 96 <= max(w, h) <= 0.7 * 96  # clearly visible at 96 x 96


def test_distractors_in_most_scenes_and_unseen_combinations_held_out():
    held = held_out_combinations()
    with_distractor = 0
    for index in range(60):
        scene, _ = scene_for("train", index, CONFIG)
        pairs = [(o.category, o.colour) for o in scene.objects]
        assert 2 <= len(pairs) <= 5
        assert not set(pairs) & held
        cats, cols = [p[0] for p in pairs], [p[1] for p in pairs]
        with_distractor += len(set(cats)) < len(cats) or len(set(cols)) < len(cols)
    assert with_distractor >= 36  # most scenes
    for index in range(20):
        scene, _ = scene_for("test_unseen", index, CONFIG)
        assert all((o.category, o.colour) in held for o in scene.objects)


def test_train_unseen_is_a_fine_tuning_set_of_the_held_out_pairs_only(tmp_path):
    held = held_out_combinations()
    pairs_seen = set()
    for index in range(30):
        scene, _ = scene_for("train_unseen", index, CONFIG)
        pairs = {(o.category, o.colour) for o in scene.objects}
        assert pairs <= held
        pairs_seen |= pairs
        # other images than test_unseen's (which it is scored on), and than train's
        image = generate_row("train_unseen", index, CONFIG)["image"]["bytes"]
        assert image != generate_row("test_unseen", index, CONFIG)["image"]["bytes"]
        assert image != generate_row("train", index, CONFIG)["image"]["bytes"]
    assert len(pairs_seen) >= len(held) // 2  # it covers the held-out pairs, not one of them
    # omitted unless asked for, so that existing builds keep their splits
    assert MRESSynthConfig(name="x").num_train_unseen == 0
    ds = build_mres_synth(str(tmp_path / "ft"), image_size=48, seed=3, cache_dir=str(tmp_path / "cache"),
                          num_images={"train": 0, "validation": 1, "test": 0, "test_unseen": 1, "train_unseen": 3})
    assert {split: len(rows) for split, rows in ds.items()} == {"validation": 1, "test_unseen": 1, "train_unseen": 3}
    assert load_dataset(str(tmp_path / "ft"), split="train_unseen", streaming=True).features == MRES_FEATURES


def test_both_granularities_and_template_variety():
    sentences, granularities = set(), set()
    for index in range(30):
        for ref in generate_row("train", index, CONFIG)["referents"]:
            sentences.update(ref["sentences"])
            granularities.add(ref["granularity"])
    assert granularities == {"object", "part"}
    joined = "\n".join(sentences)
    for phrase in (" of the ", " on the left", "'s ", " that is "):
        assert phrase in joined


def test_builder_and_hub_folder(tmp_path):
    counts = {"train": 12, "validation": 5, "test": 3, "test_unseen": 3}
    out = tmp_path / "synth"
    ds = build_mres_synth(str(out), image_size=64, num_images=counts, seed=3, cache_dir=str(tmp_path / "cache"))
    assert {s: len(d) for s, d in ds.items()} == counts
    assert ds["train"].features == MRES_FEATURES
    assert (tmp_path / "cache").exists()
    streamed = load_dataset(str(out), streaming=True)
    first = next(iter(streamed["validation"]))
    assert first["image"].size == (64, 64) and first["source"] == "mres-synth"
    assert first["referents"] == ds["validation"][0]["referents"]
    # identical arguments -> identical Parquet bytes
    again = tmp_path / "again"
    build_mres_synth(str(again), image_size=64, num_images=counts, seed=3, cache_dir=str(tmp_path / "cache2"))
    digest = lambda folder: {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest()
                             for p in glob.glob(os.path.join(folder, "data", "*.parquet"))}
    assert digest(out) == digest(again) and len(digest(out)) == 4
    with pytest.raises(ValueError, match="unknown split"):
        build_mres_synth(str(tmp_path / "bad"), num_images={"training": 3})


def test_builder_direct_use_and_zero_sized_split(tmp_path):
    builder = MRESSynth(cache_dir=str(tmp_path), image_size=48, num_train=4, num_validation=2, num_test=0,
                        num_test_unseen=1)
    builder.download_and_prepare()
    ds = builder.as_dataset()
    assert sorted(ds) == ["test_unseen", "train", "validation"]
    assert builder.last_summary.startswith("kept 7, fixed 0, skipped 0")
    with pytest.raises(ValueError, match="image_size"):
        MRESSynthConfig(name="x", image_size=8)


def test_command_line_writes_a_streamable_folder(tmp_path):
    out = tmp_path / "cli"
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf-cache")}
    result = subprocess.run(
        [sys.executable, "-m", "dataset_scripts.mres_synth", "--output_dir", str(out), "--image_size", "48",
         "--num_train", "6", "--num_validation", "2", "--num_test", "2", "--num_test_unseen", "2"],
        capture_output=True, text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)), timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "images/s" in result.stdout
    streamed = load_dataset(str(out), split="train", streaming=True)
    assert len(list(streamed)) == 6
