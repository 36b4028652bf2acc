"""The collator cuts the token columns no expression attends to, and the model's outputs do not change."""

import torch

from dataset_scripts.mres_synth import build_mres_synth
from tiny_models.unires import tiny_model_and_processor
from unires.training.collator import MRESTrainingCollator, drop_padding_columns


def test_batch_is_as_wide_as_its_longest_expression_with_the_same_loss(tmp_path):
    data = build_mres_synth(tmp_path / "synth", image_size=32, seed=3,
                            num_images={"train": 3, "validation": 1, "test": 1, "test_unseen": 1})
    model, processor = tiny_model_and_processor(image_size=32, text_max_length=40)
    batch = MRESTrainingCollator(processor, referents_per_image=3, seed=0)(list(data["train"]))
    lengths = batch["attention_mask"].sum(-1)
    assert batch["input_ids"].shape[1] == batch["attention_mask"].shape[1] == int(lengths.max())
    assert int(lengths.max()) < processor.text_max_length  # short synthetic sentences: the cut is real

    texts = processor.tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    padded = processor.tokenize(texts, return_tensors="pt")
    assert padded["input_ids"].shape[1] == processor.text_max_length
    torch.testing.assert_close(padded["input_ids"][:, : lengths.max()], batch["input_ids"])
    inputs = {k: batch[k] for k in ("pixel_values", "image_indices", "labels")}
    with torch.no_grad():
        cut = model(**inputs, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        full = model(**inputs, **padded)
    torch.testing.assert_close(cut.logits, full.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cut.loss, full.loss)


def test_nothing_is_cut_when_every_column_is_attended():
    batch = {"input_ids": torch.tensor([[5, 6, 7], [5, 6, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}
    drop_padding_columns(batch)
    assert batch["input_ids"].shape == (2, 3)
    batch = {"input_ids": torch.tensor([[5, 6, 0, 0], [5, 0, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])}
    drop_padding_columns(batch)
    assert batch["input_ids"].tolist() == [[5, 6], [5, 0]] and batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
