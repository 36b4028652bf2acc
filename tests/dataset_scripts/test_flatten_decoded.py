"""flatten_referents' streaming sharing (one decoded image per row) and decode_masks (one decoded mask per referent)."""

import numpy as np
import pytest
from datasets import Dataset, IterableDataset

import dataset_scripts.flatten as flatten_module
from dataset_scripts.features import FLAT_FEATURES, MRES_FEATURES
from dataset_scripts.flatten import flatten_referents
from dataset_scripts.masks import decode_mask

from test_dataset_flatten import _rows  # the same two rows (pytest puts this folder on sys.path)


@pytest.fixture(scope="module")
def dataset():
    return Dataset.from_list(_rows(), features=MRES_FEATURES)


def test_streaming_samples_of_a_row_share_its_decoded_image(dataset):
    streamed = flatten_referents(dataset.to_iterable_dataset(num_shards=2))
    assert streamed.features == FLAT_FEATURES
    got = list(streamed)
    assert [s["image_id"] for s in got] == ["a"] * 4 + ["b"] * 2
    assert all(s["image"] is got[0]["image"] for s in got[:4]) and got[4]["image"] is got[5]["image"]
    assert got[0]["image"] is not got[4]["image"] and got[4]["image"].getpixel((0, 0)) == (0, 0, 255)
    assert got[3]["mask"] == dataset[0]["referents"][1]["mask"] and got[3]["parent_mask"] == got[0]["mask"]


@pytest.mark.parametrize("streaming", [False, True])
def test_decode_masks_gives_the_decoded_rle_of_each_sample(dataset, streaming):
    plain = list(flatten_referents(dataset))
    source = dataset.to_iterable_dataset(num_shards=2) if streaming else dataset
    decoded = flatten_referents(source, decode_masks=True)
    assert isinstance(decoded, IterableDataset if streaming else Dataset)
    got = list(decoded)
    assert [s["sentence"] for s in got] == [s["sentence"] for s in plain]
    for sample, reference in zip(got, plain):
        assert sample["mask"].dtype == bool and not sample["mask"].flags.writeable
        np.testing.assert_array_equal(sample["mask"], decode_mask(reference["mask"]))
        if reference["parent_mask"] is None:
            assert sample["parent_mask"] is None
        else:
            np.testing.assert_array_equal(sample["parent_mask"], decode_mask(reference["parent_mask"]))
        assert {k: v for k, v in sample.items() if k not in ("image", "mask", "parent_mask")} == {
            k: v for k, v in reference.items() if k not in ("image", "mask", "parent_mask")}


def test_streaming_decodes_each_referent_once(dataset, monkeypatch):
    calls = []

    def counting_decode(rle, name="mask"):
        calls.append(name)
        return decode_mask(rle, name)

    monkeypatch.setattr(flatten_module, "decode_mask", counting_decode)
    got = list(flatten_referents(dataset.to_iterable_dataset(), decode_masks=True))
    # car (3 sentences, also the wheel's parent), wheel, ear (2 sentences); the dog has no sentence
    assert sorted(calls) == ["mask of image 'a' referent 'a/o0'", "mask of image 'a' referent 'a/o0/wheel'",
                             "mask of image 'b' referent 'b/o0/ear'"]
    assert got[0]["mask"] is got[1]["mask"] is got[2]["mask"] is got[3]["parent_mask"]
    assert got[4]["mask"] is got[5]["mask"]


@pytest.mark.parametrize("streaming", [False, True])
def test_decode_masks_names_a_bad_rle(streaming):
    rows = _rows()
    rows[1]["referents"][0]["mask"] = {"size": [6, 8], "counts": "0"}  # 0 pixels for a 6x8 mask
    dataset = Dataset.from_list(rows, features=MRES_FEATURES)
    source = dataset.to_iterable_dataset() if streaming else dataset
    with pytest.raises(ValueError, match="image 'b' referent 'b/o0/ear'"):
        list(flatten_referents(source, decode_masks=True))


def test_untyped_streaming_dataset_is_refused():
    untyped = IterableDataset.from_generator(lambda: iter([{"image_id": "a"}]))
    assert untyped.column_names is None
    with pytest.raises(ValueError, match="known features"):
        flatten_referents(untyped)
