"""The training collator samples at most K referents per image, reproducibly per (seed, epoch, image)."""

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_scripts.masks import decode_mask
from dataset_scripts.mres_synth import build_mres_synth
from modeling_unires import UniRESImageProcessor, UniRESProcessor
from tiny_models.unires import tiny_model_and_processor
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


def test_batch_equals_the_per_expression_reference(rows, processor):
    # The batch is what tokenizing, decoding and PIL-resizing each chosen (referent, sentence) one by one gives;
    # 48-pixel images into a 32-pixel processor, so that the labels are resized.
    small = UniRESProcessor(UniRESImageProcessor(size=32), processor.tokenizer, text_max_length=17)
    collator = MRESTrainingCollator(small, referents_per_image=3, seed=2)
    batch = collator(rows)
    texts, labels, indices = [], [], []
    for image_index, row in enumerate(rows):
        for referent, sentence in collator.sample(row):
            texts.append(sentence)
            mask = Image.fromarray(decode_mask(referent["mask"]).astype(np.uint8) * 255)
            labels.append(np.asarray(mask.resize((32, 32), resample=Image.NEAREST)) > 127)
            indices.append(image_index)
    tokens = small.tokenizer(texts, padding="max_length", truncation=True, max_length=17, return_tensors="pt")
    width = batch["input_ids"].shape[1]
    assert torch.equal(batch["input_ids"], tokens["input_ids"][:, :width])
    assert torch.equal(batch["attention_mask"], tokens["attention_mask"][:, :width])
    assert not tokens["attention_mask"][:, width:].any()
    assert torch.equal(batch["labels"], torch.from_numpy(np.stack(labels).astype(np.float32)))
    assert batch["image_indices"].tolist() == indices
    pixels = small.image_processor.preprocess([row["image"] for row in rows])["pixel_values"]
    assert torch.equal(batch["pixel_values"], pixels)
