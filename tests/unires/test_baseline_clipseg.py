"""The CLIPSeg peer of `examples/ablate.py --baseline clipseg`: the demo's towers, the demo's sampling, CLIPSeg's own
loss, a saved model that the harness loads (a few steps, tiny batches: the recipe, not the accuracy)."""

import numpy as np
import pytest
import torch

from dataset_scripts.mres_synth import build_mres_synth
from unires.baselines.clipseg import (
    CLIPSegTrainingCollator,
    demo_clipseg_config,
    logits_size,
    reset_decoder_init,
    train_clipseg_baseline,
)
from unires.demo import DEMO_CONFIG, DEMO_IMAGE_SIZE
from unires.evaluation.segmenters import CLIPSegSegmenter
from tiny_models.baselines import clipseg_processor
from unires.training.collator import MRESTrainingCollator
from tiny_models.unires import tiny_tokenizer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clipseg_baseline") / "data"
    build_mres_synth(str(folder), image_size=DEMO_IMAGE_SIZE, seed=2,
                     num_images={"train": 4, "validation": 2, "test": 1, "test_unseen": 2})
    return folder


def test_config_has_the_demo_towers_and_clipseg_decoder():
    config = demo_clipseg_config(tiny_tokenizer())
    vision, text = DEMO_CONFIG["vision_config"], DEMO_CONFIG["text_config"]
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                "patch_size"):
        assert getattr(config.vision_config, key) == vision[key], key
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        assert getattr(config.text_config, key) == text[key], key
    assert config.reduce_dim == 64 and config.use_complex_transposed_convolution
    assert config.extract_layers == (1, 2, 3) and logits_size(config) == 48


def test_decoder_starts_from_pytorch_default_init():
    from transformers import CLIPSegForImageSegmentation

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    model = CLIPSegForImageSegmentation(demo_clipseg_config(tokenizer)).eval()
    assert model.decoder.film_mul.weight.std() > 0.5  # transformers' init: N(0, 1), logits in the hundreds
    reset_decoder_init(model)
    assert model.decoder.film_mul.weight.std() < 0.1
    text = tokenizer(["the red car", "its wheel"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(2, 3, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE), **text).logits
    assert logits.shape == (2, 48, 48) and logits.std() < 5


def test_collator_samples_as_the_unires_collator(data_dir):
    from dataset_scripts.load import load_mres_dataset

    rows = load_mres_dataset([str(data_dir)], "train")
    tokenizer = tiny_tokenizer(text_max_length=17)
    collator = CLIPSegTrainingCollator(clipseg_processor(tokenizer, DEMO_IMAGE_SIZE), 48, referents_per_image=3, seed=4)
    reference = MRESTrainingCollator(None, 3, seed=4)
    batch = collator([rows[0], rows[1]])
    pairs = reference.sample(rows[0]) + reference.sample(rows[1])
    assert batch["pixel_values"].shape == (len(pairs), 3, DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE)
    assert batch["input_ids"].shape[0] == len(pairs) and batch["labels"].shape == (len(pairs), 48, 48)
    # Soft labels: the mask area-averaged, so its mean is the referent's share of the image.
    from dataset_scripts.masks import decode_mask

    expected = np.mean(decode_mask(pairs[0][0]["mask"]))
    assert float(batch["labels"][0].mean()) == pytest.approx(expected, abs=1e-5)


def test_training_runs_saves_and_evaluates_with_the_harness(data_dir, tmp_path):
    metrics = train_clipseg_baseline(tmp_path / "clipseg", data_dir=data_dir, max_steps=3, batch_size=2,
                                     referents_per_image=2, eval_splits=("validation",), progress=False)
    assert metrics["training"]["steps"] == 3 and metrics["training"]["label_size"] == 48
    assert metrics["splits"]["validation"]["clipseg"]["object+part"]["count"] > 0
    assert metrics["segmenter"]["model_type"] == "clipseg" and metrics["segmenter"]["threshold"] == 0.35
    segmenter = CLIPSegSegmenter.from_pretrained(str(tmp_path / "clipseg" / "model"), device="cpu")
    from PIL import Image

    masks = segmenter.masks([Image.new("RGB", (70, 50))], [["the red car", "the wheels of the bus"]])[0]
    assert [m.shape for m in masks] == [(50, 70), (50, 70)]
    assert torch.isfinite(torch.tensor([entry["loss"] for entry in metrics["training"]["log"]])).all()
