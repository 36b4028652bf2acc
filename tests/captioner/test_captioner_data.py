"""Fine-tune data builders on miniature copies of each public release layout, and the mixture."""
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from captioner.finetune_data import build_caption_mixture, load_caption_source, parse_mapping


def _image(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((size[1], size[0], 3), dtype=np.uint8)).save(path)


def _json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    root = tmp_path_factory.mktemp("releases")
    # COCO captions: 2 images, 3 captions, one caption of a missing image, one empty caption.
    coco = root / "coco"
    _image(coco / "train2017" / "000000000001.jpg", (40, 30))
    _image(coco / "train2017" / "000000000002.jpg", (20, 50))
    _json(coco / "annotations" / "captions_train2017.json", {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 40, "height": 30},
                   {"id": 2, "file_name": "000000000002.jpg", "width": 20, "height": 50},
                   {"id": 3, "file_name": "000000000003.jpg", "width": 20, "height": 50}],
        "annotations": [{"id": 10, "image_id": 1, "caption": "A dog on the grass. "},
                        {"id": 11, "image_id": 1, "caption": "A brown dog."},
                        {"id": 12, "image_id": 2, "caption": "A red car."},
                        {"id": 13, "image_id": 3, "caption": "Not on disk."},
                        {"id": 14, "image_id": 2, "caption": "  "}]})
    # Visual Genome: one good region, one with zero width, one NaN-like (null) coordinate.
    vg = root / "vg"
    _image(vg / "VG_100K" / "7.jpg")
    _json(vg / "region_descriptions.json", [{"id": 7, "regions": [
        {"region_id": 70, "image_id": 7, "phrase": "the man on the left", "x": 1, "y": 2, "width": 10, "height": 12},
        {"region_id": 71, "image_id": 7, "phrase": "nothing", "x": 1, "y": 2, "width": 0, "height": 12},
        {"region_id": 72, "image_id": 7, "phrase": "broken", "x": None, "y": 2, "width": 3, "height": 12}]}])
    # PACO: an object, two of its parts, and a part with a negative height.
    paco = root / "paco"
    _image(paco / "train2017" / "000000000005.jpg")
    _json(paco / "annotations" / "paco_lvis_v1_train.json", {
        "images": [{"id": 5, "file_name": "train2017/000000000005.jpg", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "dog:ear"}, {"id": 3, "name": "trash_can:inner_body"}],
        "annotations": [{"id": 100, "image_id": 5, "category_id": 1, "bbox": [0, 0, 30, 30], "obj_ann_id": 100},
                        {"id": 101, "image_id": 5, "category_id": 2, "bbox": [2, 2, 5, 5], "obj_ann_id": 100},
                        {"id": 102, "image_id": 5, "category_id": 3, "bbox": [3, 3, 4, 4], "obj_ann_id": 999},
                        {"id": 103, "image_id": 5, "category_id": 2, "bbox": [2, 2, 5, -1], "obj_ann_id": 100}]})
    # PartImageNet: COCO-style parts named "<Supercategory> <Part>", images in a synset folder.
    pin = root / "partimagenet"
    _image(pin / "images" / "train" / "n01440764" / "n01440764_1.JPEG")
    _json(pin / "annotations" / "train.json", {
        "images": [{"id": 1, "file_name": "n01440764_1.JPEG", "width": 40, "height": 30}],
        "categories": [{"id": 0, "name": "Quadruped Head", "supercategory": "Quadruped"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [1, 1, 8, 8]},
                        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [1, 1, 8, 8]}]})
    return root


def _rejects(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_coco_captions_image_level(releases, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    ds = load_caption_source("coco_captions", str(releases / "coco"), cache_dir=str(tmp_path / "cache"), rejects_path=str(rejects))
    rows = sorted(ds, key=lambda r: r["caption"])
    assert [r["caption"] for r in rows] == ["A brown dog.", "A dog on the grass.", "A red car."]
    assert all(r["granularity"] == "image" and r["source"] == "coco_captions" for r in rows)
    assert {r["image_id"]: r["bbox"] for r in rows} == {"1": [0, 0, 40, 30], "2": [0, 0, 20, 50]}
    assert rows[0]["image"].size == (40, 30)
    reasons = sorted(r["reason"].split(":")[0] for r in _rejects(rejects))
    assert reasons == ["empty caption", "missing image"]


def test_visual_genome_object_level(releases, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    ds = load_caption_source("visual_genome", str(releases / "vg"), cache_dir=str(tmp_path / "cache"), rejects_path=str(rejects))
    assert len(ds) == 1
    assert ds[0]["caption"] == "the man on the left" and ds[0]["bbox"] == [1, 2, 10, 12] and ds[0]["granularity"] == "object"
    logged = {r["item_id"]: r["reason"] for r in _rejects(rejects)}
    assert set(logged) == {"region_id=71", "region_id=72"}
    assert "zero or negative size" in logged["region_id=71"] and "non-numeric" in logged["region_id=72"]


def test_paco_parts_use_the_part_of_object_template(releases, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    ds = load_caption_source("paco", str(releases / "paco"), cache_dir=str(tmp_path / "cache"), rejects_path=str(rejects))
    assert sorted(ds["caption"]) == ["ear of dog", "inner body of trash can"]
    assert set(ds["granularity"]) == {"part"}
    assert [r["item_id"] for r in _rejects(rejects)] == ["paco_lvis_v1_train.json#annotation=103"]


def test_partimagenet_parts(releases, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    ds = load_caption_source("partimagenet", str(releases / "partimagenet"), cache_dir=str(tmp_path / "cache"), rejects_path=str(rejects))
    assert ds["caption"] == ["head of animal"] and ds[0]["image"].size == (40, 30)
    assert "unknown category" in _rejects(rejects)[0]["reason"]


def test_missing_release_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="region_descriptions.json"):
        load_caption_source("visual_genome", str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="Unknown caption source 'vqa'"):
        load_caption_source("vqa", str(tmp_path))


def test_mixture_follows_the_weights(releases, tmp_path):
    dirs = {"coco_captions": str(releases / "coco"), "paco": str(releases / "paco")}
    mixed = build_caption_mixture(dirs, {"coco_captions": 1.0, "paco": 9.0}, seed=0, cache_dir=str(tmp_path / "cache"),
                                  stopping_strategy="all_exhausted")
    counts = Counter(mixed["source"])
    assert set(counts) == {"coco_captions", "paco"}
    assert counts["paco"] > counts["coco_captions"]  # paco (2 rows) is revisited to follow its weight
    assert set(mixed.features) == {"image", "image_id", "bbox", "granularity", "caption", "source"}
    with pytest.raises(ValueError, match="'vg'"):
        build_caption_mixture(dirs, {"vg": 1.0}, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="must be > 0"):
        build_caption_mixture(dirs, {"paco": 0.0}, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="stopping_strategy"):
        build_caption_mixture(dirs, stopping_strategy="steps", cache_dir=str(tmp_path / "cache"))


def test_an_epoch_of_the_mixture_ends_when_the_first_source_is_exhausted(releases, tmp_path):
    dirs = {"coco_captions": str(releases / "coco"), "paco": str(releases / "paco")}
    for seed in range(3):
        epoch = build_caption_mixture(dirs, {"coco_captions": 1.0, "paco": 9.0}, seed=seed, cache_dir=str(tmp_path / "cache"))
        keys = [(row["source"], row["image_id"], tuple(row["bbox"]), row["caption"]) for row in epoch]
        assert len(keys) == len(set(keys))  # no example repeats within an epoch
        counts = Counter(key[0] for key in keys)
        assert counts["paco"] == 2 or counts["coco_captions"] == 3  # it ends when one source is used up


def test_parse_mapping():
    assert parse_mapping("coco_captions=1, paco=2.5", float) == {"coco_captions": 1.0, "paco": 2.5}
    with pytest.raises(ValueError, match="name=value"):
        parse_mapping("coco_captions", float)


# -- names, streaming, accounting ------------------------------------------------------------

from captioner.finetune_data import readable_name  # noqa: E402
from captioner.finetune_data.part_names import (  # noqa: E402
    PACO_OBJECT_NAMES,
    PACO_PART_NAMES,
    PARTIMAGENET_OBJECT_NAMES,
    PARTIMAGENET_PART_NAMES,
    part_caption,
)
from captioner.finetune_data.schema import iter_json_array  # noqa: E402

# Every PACO object name with a parenthesis or an LVIS compound, as the release spells it.
PACO_PARENTHESISED = ["car_(automobile)", "drum_(musical_instrument)", "glass_(drink_container)", "mouse_(computer_equipment)",
                      "pan_(for_cooking)", "slipper_(footwear)", "tape_(sticky_cloth_or_paper)"]


@pytest.mark.parametrize("part, obj, part_table, object_table, caption", [
    ("wheel", "car_(automobile)", PACO_PART_NAMES, PACO_OBJECT_NAMES, "wheel of car"),
    ("rim", "glass_(drink_container)", PACO_PART_NAMES, PACO_OBJECT_NAMES, "rim of drinking glass"),
    ("colied_tube", "pipe", PACO_PART_NAMES, PACO_OBJECT_NAMES, "coiled tube of pipe"),
    ("steeringwheel", "car_(automobile)", PACO_PART_NAMES, PACO_OBJECT_NAMES, "steering wheel of car"),
    ("inner_body", "trash_can", PACO_PART_NAMES, PACO_OBJECT_NAMES, "inner body of trash can"),
    ("Tier", "Car", PARTIMAGENET_PART_NAMES, PARTIMAGENET_OBJECT_NAMES, "tire of car"),
    ("Tier", "Bicycle", PARTIMAGENET_PART_NAMES, PARTIMAGENET_OBJECT_NAMES, "tire of bicycle"),
    ("Hand", "Biped", PARTIMAGENET_PART_NAMES, PARTIMAGENET_OBJECT_NAMES, "hand of primate"),
    ("Head", "Quadruped", PARTIMAGENET_PART_NAMES, PARTIMAGENET_OBJECT_NAMES, "head of animal"),
    ("Side Mirror", "Car", PARTIMAGENET_PART_NAMES, PARTIMAGENET_OBJECT_NAMES, "side mirror of car"),
])
def test_part_names_read_as_a_person_says_them(part, obj, part_table, object_table, caption):
    assert part_caption(part, obj, part_table, object_table) == caption


def test_no_parenthesis_or_underscore_survives():
    for name in PACO_PARENTHESISED:
        assert name in PACO_OBJECT_NAMES
        assert "(" not in readable_name(name, PACO_OBJECT_NAMES) and "_" not in readable_name(name, PACO_OBJECT_NAMES)
    assert readable_name("kettle_(tea)", PACO_OBJECT_NAMES) == "kettle"  # unknown to the table: parenthesis dropped
    assert all("(" not in value and "_" not in value for value in {**PACO_OBJECT_NAMES, **PACO_PART_NAMES}.values())


def test_builders_write_readable_part_captions(releases, tmp_path):
    paco = releases / "paco_names"
    _image(paco / "train2017" / "000000000005.jpg")
    _json(paco / "annotations" / "paco_lvis_v1_train.json", {
        "images": [{"id": 5, "file_name": "train2017/000000000005.jpg", "width": 40, "height": 30}],
        "categories": [{"id": 1, "name": "car_(automobile)"}, {"id": 2, "name": "car_(automobile):wheel"}],
        "annotations": [{"id": 100, "image_id": 5, "category_id": 1, "bbox": [0, 0, 30, 30], "obj_ann_id": 100},
                        {"id": 101, "image_id": 5, "category_id": 2, "bbox": [2, 2, 5, 5], "obj_ann_id": 100}]})
    assert load_caption_source("paco", str(paco), cache_dir=str(tmp_path / "cache"))["caption"] == ["wheel of car"]
    pin = releases / "partimagenet_names"
    _image(pin / "images" / "train" / "n02814533_1.JPEG")
    _json(pin / "annotations" / "train.json", {
        "images": [{"id": 1, "file_name": "n02814533_1.JPEG", "width": 40, "height": 30}],
        "categories": [{"id": 0, "name": "Car Tier", "supercategory": "Car"}, {"id": 1, "name": "Biped Hand", "supercategory": "Biped"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 0, "bbox": [1, 1, 8, 8]},
                        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [1, 1, 8, 8]}]})
    assert sorted(load_caption_source("partimagenet", str(pin), cache_dir=str(tmp_path / "cache"))["caption"]) == ["hand of primate", "tire of car"]


@pytest.mark.parametrize("chunk_size", [1, 7, 1 << 20])
def test_json_arrays_stream_one_element_at_a_time(tmp_path, chunk_size):
    data = [{"id": i, "regions": [{"phrase": "a [bracket], {brace} and \"quote\"", "x": i}] * i} for i in range(5)] + [[1, 2], 30, "s"]
    path = tmp_path / "array.json"
    path.write_text(" \n" + json.dumps(data, indent=1) + "\n")
    assert list(iter_json_array(str(path), chunk_size=chunk_size)) == data
    (tmp_path / "empty.json").write_text("[ ]")
    assert list(iter_json_array(str(tmp_path / "empty.json"))) == []


def test_a_broken_array_fails_after_the_elements_before_it(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": 1}, {"id": 2}, {"id": ')
    elements = iter_json_array(str(path), chunk_size=4)
    assert next(elements) == {"id": 1} and next(elements) == {"id": 2}  # yielded before the end is read
    with pytest.raises(ValueError, match="broken.json"):
        next(elements)
    (tmp_path / "object.json").write_text('{"id": 1}')
    with pytest.raises(ValueError, match="not a JSON array"):
        list(iter_json_array(str(tmp_path / "object.json")))


def test_builders_count_what_they_keep(releases, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="run_support.rejects"):
        load_caption_source("visual_genome", str(releases / "vg"), cache_dir=str(tmp_path / "cache"), rejects_path=str(tmp_path / "r.jsonl"))
        load_caption_source("coco_captions", str(releases / "coco"), cache_dir=str(tmp_path / "cache"), rejects_path=str(tmp_path / "r.jsonl"))
    summaries = [record.getMessage() for record in caplog.records if "kept" in record.getMessage()]
    assert any(line.startswith("[visual_genome/train] kept 1, fixed 0, skipped 2") for line in summaries), summaries
    assert any(line.startswith("[coco_captions/train] kept 3, fixed 0, skipped 2") for line in summaries), summaries
