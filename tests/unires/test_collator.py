"""The training collator samples at most K referents per image, reproducibly per (seed, epoch, image)."""

from collections import Counter

import pytest

from dataset_scripts.mres_synth import build_mres_synth
from modeling_unires.testing_utils import tiny_model_and_processor
from unires.training.collator import MRESTrainingCollator


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    data = build_mres_synth(tmp_path_factory.mktemp("collator") / "synth", image_size=48, seed=11,
                            num_images={"train": 6, "validation": 1, "test": 1, "test_unseen": 1})
    rows = list(data["train"])
    assert max(len(row["referents"]) for row in rows) > 3  # else K=2 below would not be a real limit
    return rows


@pytest.fixture(scope="module")
def processor():
    return tiny_model_and_processor(image_size=48)[1]


def _choice(collator, row):
    return [(referent["referent_id"], sentence) for referent, sentence in collator.sample(row)]


def test_at_most_k_expressions_per_image(rows, processor):
    collator = MRESTrainingCollator(processor, referents_per_image=2, seed=0)
    batch = collator(rows)
    per_image = Counter(batch["image_indices"].tolist())
    assert len(per_image) == len(rows) and max(per_image.values()) <= 2
    assert batch["input_ids"].shape[0] == sum(per_image.values()) == batch["labels"].shape[0]
    for row in rows:  # an image with fewer than K referents gives all of them
        assert len(collator.sample(row)) == min(2, len(row["referents"]))


def test_same_choice_for_same_seed_epoch_and_image(rows, processor):
    first = MRESTrainingCollator(processor, referents_per_image=2, seed=5)
    second = MRESTrainingCollator(processor, referents_per_image=2, seed=5)
    for epoch in (0, 3):
        first.set_epoch(epoch)
        second.set_epoch(epoch)
        for row in rows:
            assert _choice(first, row) == _choice(second, row) == _choice(first, row)
    # Other epochs and other seeds draw other referents or sentences for at least one image.
    first.set_epoch(0)
    other_epoch = MRESTrainingCollator(processor, referents_per_image=2, seed=5)
    other_epoch.set_epoch(1)
    other_seed = MRESTrainingCollator(processor, referents_per_image=2, seed=6)
    assert any(_choice(first, row) != _choice(other_epoch, row) for row in rows)
    assert any(_choice(first, row) != _choice(other_seed, row) for row in rows)


def test_granularity_filter_and_sentences_come_from_the_referent(rows, processor):
    collator = MRESTrainingCollator(processor, referents_per_image=3, granularity="part", seed=0)
    for row in rows:
        by_id = {r["referent_id"]: r for r in row["referents"]}
        for referent_id, sentence in _choice(collator, row):
            assert by_id[referent_id]["granularity"] == "part" and sentence in by_id[referent_id]["sentences"]
