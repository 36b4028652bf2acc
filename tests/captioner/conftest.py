"""Fixtures shared by the captioner tests: a tiny Qwen3-VL saved like a checkpoint, four rows, one short LoRA fine-tune."""
import datasets
import numpy as np
import pytest
from PIL import Image

from captioner.finetune_data import CAPTION_FEATURES
from tiny_models.captioner import save_tiny_captioner
from captioner.train import CaptionerDataArguments, CaptionerModelArguments, CaptionerTrainingArguments, train

CAPTIONS = ["a dog on the grass", "the man on the left", "wheel of car", "head of cat"]


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    return save_tiny_captioner(tmp_path_factory.mktemp("tiny_base"))


@pytest.fixture(scope="session")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i, (caption, granularity) in enumerate(zip(CAPTIONS, ["image", "object", "part", "part"])):
        path = folder / f"{i}.png"
        Image.fromarray(np.random.RandomState(i).randint(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)).save(path)
        box = [0, 0, 48, 40 + 8 * i] if granularity == "image" else [4 * i, 2, 20, 16]
        out.append({"image": str(path), "image_id": str(i), "bbox": box, "granularity": granularity, "caption": caption, "source": "unit"})
    return out


@pytest.fixture(scope="session")
def trained(base_dir, rows, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("trained"))
    dataset = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    result = train(
        CaptionerModelArguments(base_model=base_dir, lora_r=8, lora_alpha=16, lora_dropout=0.0),
        CaptionerDataArguments(),
        CaptionerTrainingArguments(output_dir=output_dir, per_device_train_batch_size=4, gradient_accumulation_steps=1,
                                   learning_rate=3e-2, max_steps=20, warmup_ratio=0.0, lr_scheduler_type="constant",
                                   logging_steps=1, save_steps=10, seed=0),
        train_dataset=dataset,
    )
    return result


