"""publish(): Hub layout on disk, read back by load_dataset(folder, streaming=True) with no code of ours."""

import glob
import io
import os

import numpy as np
import pytest
import yaml
from datasets import Dataset, DatasetDict, load_dataset
from PIL import Image

from dataset_scripts.features import MRES_FEATURES, SCHEMA_VERSION
from dataset_scripts.masks import encode_mask
from dataset_scripts.publish import publish


def _row(i, rng):
    h, w = 10 + i % 3, 12
    pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    mask = rng.random((h, w)) > 0.5
    obj = {"referent_id": f"img{i}/o0", "granularity": "object", "category": "cat", "object_category": "cat",
           "parent_id": None, "bbox": [0.5, 1.0, 3.25, 4.0], "mask": encode_mask(mask),
           "sentences": [f"the cat number {i}", "a cat"], "scores": None}
    part = {"referent_id": f"img{i}/o0/ear", "granularity": "part", "category": "ear", "object_category": "cat",
            "parent_id": f"img{i}/o0", "bbox": [1.0, 1.0, 2.0, 2.0], "mask": encode_mask(mask & (rng.random((h, w)) > 0.5)),
            "sentences": ["the ear of the cat"],
            "scores": {"clip": 0.25 + i / 100, "sam_iou": 0.875, "sam_stability": None, "detector": 0.5}}
    return {"image": {"bytes": buf.getvalue(), "path": None}, "image_id": f"img{i}", "width": w, "height": h,
            "source": "unit-test", "referents": [obj, part] if i % 2 else [obj]}, pixels


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    rng = np.random.default_rng(0)
    rows = {"train": [_row(i, rng) for i in range(12)], "validation": [_row(100 + i, rng) for i in range(3)]}
    ds = DatasetDict({s: Dataset.from_list([r for r, _ in v], features=MRES_FEATURES) for s, v in rows.items()})
    folder = str(tmp_path_factory.mktemp("hub") / "mres-test")
    out = publish(ds, folder, max_shard_size="2KB",
                  card_data={"pretty_name": "Unit test set", "license": "cc-by-4.0", "citation": "@misc{x, title={X}}"})
    return out, ds, rows


def test_layout_shards_and_card(published):
    folder, ds, _ = published
    train_shards = sorted(glob.glob(os.path.join(folder, "data", "train-*.parquet")))
    assert len(train_shards) > 1  # bounded size forced several shards
    n = len(train_shards)
    assert [os.path.basename(p) for p in train_shards] == [f"train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]
    assert glob.glob(os.path.join(folder, "data", "validation-*.parquet"))
    text = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    header = yaml.safe_load(text.split("---")[1])
    assert header["license"] == "cc-by-4.0"
    assert header["schema_version"] == SCHEMA_VERSION
    assert header["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*"}, {"split": "validation", "path": "data/validation-*"}]
    assert "| train | 12 | 12 | 6 | 30 |" in text  # images, objects, parts, sentences
    assert "@misc{x, title={X}}" in text and "`parent_id`" in text


def test_streaming_round_trip_compares_every_field(published):
    folder, ds, rows = published
    streamed = load_dataset(folder, streaming=True)
    assert set(streamed) == {"train", "validation"}
    for split in ("train", "validation"):
        got = list(streamed[split])
        assert len(got) == len(rows[split])
        for example, (row, pixels) in zip(got, rows[split]):
            np.testing.assert_array_equal(np.asarray(example["image"]), pixels)
            for key in ("image_id", "width", "height", "source"):
                assert example[key] == row[key]
            assert len(example["referents"]) == len(row["referents"])
            for a, b in zip(example["referents"], row["referents"]):
                for key in ("referent_id", "granularity", "category", "object_category", "parent_id",
                            "bbox", "mask", "sentences"):
                    assert a[key] == b[key], key
                if b["scores"] is None:
                    assert a["scores"] is None
                else:
                    for name, value in b["scores"].items():
                        assert a["scores"][name] == (None if value is None else pytest.approx(value)), name


def test_map_style_load_keeps_the_schema(published):
    folder, ds, _ = published
    loaded = load_dataset(folder, split="train")
    assert loaded.features == MRES_FEATURES
    assert loaded["image_id"] == ds["train"]["image_id"]


def test_republish_with_fewer_shards_leaves_no_stale_files(published, tmp_path):
    folder, ds, _ = published
    import shutil
    copy = str(tmp_path / "copy")
    shutil.copytree(folder, copy)
    publish(ds, copy)  # default bound: one shard per split
    assert [os.path.basename(p) for p in glob.glob(os.path.join(copy, "data", "train-*"))] == [
        "train-00000-of-00001.parquet"]
    assert len(list(load_dataset(copy, split="train", streaming=True))) == 12


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        publish(DatasetDict(), str(tmp_path / "x"))


def test_publish_shards_writes_both_configs_counts_and_histograms(published, tmp_path):
    """A folder whose shards exist already (as the data engine writes them) gets a card that loads both configs."""
    from dataset_scripts.publish import annotation_features, publish_shards

    _, ds, rows = published
    train = ds["train"]
    folder = tmp_path / "engine-like"
    (folder / "data").mkdir(parents=True)
    (folder / "annotations").mkdir()
    halves = [train.select(range(0, 5)), train.select(range(5, 12))]
    features = annotation_features(MRES_FEATURES)
    assert list(features) == ["image_id", "file_name", "width", "height", "source", "referents"]
    for part, half in enumerate(halves):
        half.to_parquet(str(folder / "data" / f"train-00000-of-00001-{part:03d}.parquet"))
        meta = half.remove_columns("image").add_column("file_name", [f"{i}.png" for i in half["image_id"]])
        meta.cast(features).to_parquet(str(folder / "annotations" / f"annotations-train-00000-of-00001-{part:03d}.parquet"))
    publish_shards(str(folder), card_data={"pretty_name": "Engine-like"})

    text = open(folder / "README.md", encoding="utf-8").read()
    header = yaml.safe_load(text.split("---")[1])
    assert {c["config_name"]: c["data_files"] for c in header["configs"]} == {
        "default": [{"split": "train", "path": "data/train-*"}],
        "annotations": [{"split": "train", "path": "annotations/annotations-train-*"}]}
    assert "| train | 12 | 12 | 6 | 30 | 2 |" in text  # images, objects, parts, sentences, shards
    assert "| cat | 12 |" in text and "| ear | 6 |" in text
    # scores: the parts carry clip, sam_iou and detector; sam_stability is always null, so no histogram
    assert sorted(os.listdir(folder / "figures")) == ["score_clip.png", "score_detector.png", "score_sam_iou.png"]
    assert "](figures/score_clip.png)" in text
    streamed = list(load_dataset(str(folder), split="train", streaming=True))
    assert [r["image_id"] for r in streamed] == train["image_id"]
    annotations = load_dataset(str(folder), "annotations", split="train")
    assert annotations.features == features and annotations["file_name"][0] == "img0.png"


def test_publish_shards_uploads_no_file_left_under_a_temporary_name(published, tmp_path, monkeypatch):
    """A writer killed mid-file leaves `.tmp-*` beside the finished files: the push must not carry them."""
    from huggingface_hub.utils import filter_repo_objects

    import dataset_scripts.publish as publish_module

    _, ds, _ = published
    folder = tmp_path / "engine-like"
    for sub in ("data", "rejects"):
        (folder / sub).mkdir(parents=True)
    ds["train"].to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    (folder / "data" / ".tmp-train-00000-of-00001-001.parquet").write_bytes(b"half a shard")
    (folder / "rejects" / "photos.jsonl").write_text('{"reason": "missing image: a.png"}\n')
    (folder / "rejects" / ".tmp-train-00000-of-00008.jsonl").write_text("half a line")
    (folder / "stats.json").write_text("{}")
    pushed = {}
    monkeypatch.setattr(publish_module, "check_push_access", lambda repo_id, *a, **k: repo_id)
    monkeypatch.setattr(publish_module, "push_folder", lambda folder, repo_id, **kwargs: pushed.update(kwargs))
    publish_module.publish_shards(str(folder), "org/mres", card_data={"pretty_name": "Engine-like"})

    files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    uploaded = set(filter_repo_objects(files, allow_patterns=pushed["allow_patterns"]))
    figures = {f for f in uploaded if f.startswith("figures/")}
    assert figures and uploaded - figures == {"README.md", "data/train-00000-of-00001.parquet", "rejects/photos.jsonl",
                                              "stats.json"}
