"""flatten_referents on map-style and streaming datasets: columns, filters, parent masks, seeded choice."""

import io

import numpy as np
import pytest
from datasets import Dataset, IterableDataset
from PIL import Image

from dataset_scripts.features import FLAT_FEATURES, MRES_FEATURES
from dataset_scripts.flatten import choose_sentence_index, flatten_referents
from dataset_scripts.masks import encode_mask


def _png(colour, size=(8, 6)):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _mask(h, w, x0, x1):
    m = np.zeros((h, w), bool)
    m[:, x0:x1] = True
    return encode_mask(m)


def _ref(rid, gran, cat, obj_cat, parent, mask, sentences):
    return {"referent_id": rid, "granularity": gran, "category": cat, "object_category": obj_cat,
            "parent_id": parent, "bbox": [0.0, 0.0, 1.0, 1.0], "mask": mask, "sentences": sentences,
            "scores": None}


def _rows():
    h, w = 6, 8
    return [
        {"image": {"bytes": _png((255, 0, 0)), "path": None}, "image_id": "a", "width": w, "height": h,
         "source": "test", "referents": [
             _ref("a/o0", "object", "car", "car", None, _mask(h, w, 0, 6), ["the car", "a red car", "car"]),
             _ref("a/o0/wheel", "part", "wheel", "car", "a/o0", _mask(h, w, 1, 3), ["the wheels of the car"]),
             _ref("a/o1", "object", "dog", "dog", None, _mask(h, w, 6, 8), []),  # no sentence: no sample
         ]},
        {"image": {"bytes": _png((0, 0, 255)), "path": None}, "image_id": "b", "width": w, "height": h,
         "source": "test", "referents": [
             _ref("b/o0/ear", "part", "ear", "dog", None, _mask(h, w, 2, 4), ["the ear", "an ear"]),
         ]},
    ]


@pytest.fixture(scope="module")
def dataset():
    return Dataset.from_list(_rows(), features=MRES_FEATURES)


def test_map_style_columns_and_one_sample_per_sentence(dataset):
    flat = flatten_referents(dataset)
    assert isinstance(flat, Dataset)
    assert set(flat.column_names) == set(FLAT_FEATURES)
    assert flat["sentence"] == ["the car", "a red car", "car", "the wheels of the car", "the ear", "an ear"]
    sample = flat[3]
    assert sample["granularity"] == "part" and sample["object_category"] == "car"
    assert sample["parent_mask"] == dataset[0]["referents"][0]["mask"]  # the wheel's car
    assert flat[0]["parent_mask"] is None and flat[4]["parent_mask"] is None  # object; part without object
    assert isinstance(sample["image"], Image.Image) and sample["image"].getpixel((0, 0)) == (255, 0, 0)
    assert flat[5]["image"].getpixel((0, 0)) == (0, 0, 255)


def test_granularity_filter(dataset):
    assert flatten_referents(dataset, granularity="object")["referent_id"] == ["a/o0"] * 3
    assert flatten_referents(dataset, granularity="part")["referent_id"] == ["a/o0/wheel", "b/o0/ear", "b/o0/ear"]
    with pytest.raises(ValueError, match="granularity"):
        flatten_referents(dataset, granularity="pixel")
    with pytest.raises(ValueError, match="sentences"):
        flatten_referents(dataset, sentences="some")


def test_one_sentence_per_referent_is_seeded(dataset):
    picks = {}
    for seed in range(6):
        flat = flatten_referents(dataset, sentences="one", seed=seed)
        assert flat["referent_id"] == ["a/o0", "a/o0/wheel", "b/o0/ear"]
        again = flatten_referents(dataset, sentences="one", seed=seed)
        assert flat["sentence"] == again["sentence"]
        expected = ["the car", "a red car", "car"][choose_sentence_index(3, "a/o0", seed)]
        assert flat["sentence"][0] == expected
        picks[seed] = flat["sentence"][0]
    assert len(set(picks.values())) > 1  # the seed changes the choice


def test_streaming_gives_the_same_samples(dataset):
    expected = flatten_referents(dataset, sentences="one", seed=3)
    streamed = flatten_referents(dataset.to_iterable_dataset(num_shards=2), sentences="one", seed=3)
    assert isinstance(streamed, IterableDataset)
    got = list(streamed)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert isinstance(a["image"], Image.Image)
        assert np.array_equal(np.asarray(a["image"]), np.asarray(b["image"]))
        assert {k: v for k, v in a.items() if k != "image"} == {k: v for k, v in b.items() if k != "image"}
