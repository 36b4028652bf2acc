"""Tiny Qwen3-VL captioner: label masking, LoRA training, save/load/merge, batched captioning, bad input."""
import json
import os
import shutil

import datasets
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from captioner import BoxRequest, CaptionCollator, DenseCaptioner, load_base_model, load_captioner
from captioner.encoding import IGNORE_INDEX
from captioner.finetune_data import CAPTION_FEATURES
from run_support.rejects import RejectLog
from captioner.train import CaptionerDataArguments, CaptionerModelArguments, CaptionerTrainingArguments, train

CAPTIONS = ["a dog on the grass", "the man on the left", "wheel of car", "head of cat"]


def _loss(model, batch):
    with torch.no_grad():
        return model(**batch).loss.item()


def test_only_answer_tokens_have_labels(base_dir, rows):
    _, processor = load_base_model(base_dir)
    batch = CaptionCollator(processor)(rows)
    tokenizer = processor.tokenizer
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, caption in enumerate(CAPTIONS):
        labelled = batch["labels"][row][batch["labels"][row] != IGNORE_INDEX]
        assert labelled[-1].item() == im_end  # the end-of-turn is learned, so generation stops
        assert tokenizer.decode(labelled[:-1]) == caption
        assert (batch["labels"][row][batch["attention_mask"][row] == 0] == IGNORE_INDEX).all()
        prompt_ids = batch["input_ids"][row][batch["labels"][row] == IGNORE_INDEX]
        assert (prompt_ids == processor.image_token_id).any()  # the image and the prompt are never labels


def test_collator_skips_bad_rows_and_logs_them(base_dir, rows, tmp_path):
    _, processor = load_base_model(base_dir)
    rejects = RejectLog(tmp_path / "rejects.jsonl", stage="unit")
    bad = [dict(rows[0], bbox=[1, 1, 0, 5]), dict(rows[1], image=str(tmp_path / "missing.png")), rows[2]]
    batch = CaptionCollator(processor, rejects=rejects)(bad)
    assert batch["input_ids"].shape[0] == 1
    short = CaptionCollator(processor, max_length=10, rejects=rejects)([rows[2]])
    assert short["placeholder"] is True  # all rows rejected: a zero-loss placeholder keeps ranks in step
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert len(reasons) == 3 and "zero or negative size" in reasons[0] and "Cannot read" in reasons[1] and "too long" in reasons[2]


def test_lora_steps_lower_the_loss_and_change_only_the_adapter(base_dir, rows, trained):
    base, processor = load_base_model(base_dir)
    batch = CaptionCollator(processor)(rows)
    before = _loss(base, batch)
    after = _loss(trained.model, batch)
    assert after < before * 0.5, (before, after)
    assert trained.global_step == 20
    trained_state = trained.model.get_base_model().state_dict()
    for name, weight in base.state_dict().items():
        key = name.replace(".weight", ".base_layer.weight") if name.replace(".weight", ".base_layer.weight") in trained_state else name
        assert torch.equal(trained_state[key], weight), name
    lora_b = [p for n, p in trained.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    assert not any("visual" in n for n, p in trained.model.named_parameters() if p.requires_grad)


def test_saving_writes_only_the_adapter(trained):
    files = os.listdir(trained.output_dir)
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files and "README.md" in files
    assert not any(f.startswith("model") and f.endswith(".safetensors") for f in files)
    assert all("lora_" in key for key in load_file(os.path.join(trained.output_dir, "adapter_model.safetensors")))
    assert {"checkpoint-10", "checkpoint-20"} <= set(files)
    card = open(os.path.join(trained.output_dir, "README.md")).read()
    assert "library_name: peft" in card and '`{"bbox_2d": [0, 0, 1000, 1000]}`' in card  # the tiny base is a Qwen3-VL


def _requests(rows, n=7):
    images = [Image.open(r["image"]).convert("RGB") for r in rows]
    return [BoxRequest(images[i % len(images)], [i, i % 5, 20 + i, 14], ["image", "object", "part"][i % 3], item=i) for i in range(n)]


def test_loaded_and_merged_adapter_generate_identically(trained, rows):
    requests = _requests(rows)
    unmerged, processor = load_captioner(trained.output_dir, merge=False)
    merged, _ = load_captioner(trained.output_dir, merge=True)
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    live = DenseCaptioner(trained.model, processor, max_new_tokens=8).caption_requests(requests)
    assert DenseCaptioner(unmerged, processor, max_new_tokens=8).caption_requests(requests) == live
    assert DenseCaptioner(merged, processor, max_new_tokens=8).caption_requests(requests) == live
    # the fine-tune learned the training captions
    image = Image.open(rows[2]["image"])
    assert DenseCaptioner(merged, processor, max_new_tokens=8).caption(image, [rows[2]["bbox"]], "part") == ["wheel of car"]


def test_batched_captioning_keeps_input_order(trained, rows):
    merged, processor = load_captioner(trained.output_dir, merge=True)
    requests = _requests(rows, n=7)
    one_by_one = DenseCaptioner(merged, processor, max_new_tokens=8, max_batch_size=1).caption_requests(requests)
    captioner = DenseCaptioner(merged, processor, max_new_tokens=8, max_batch_size=3)
    assert [len(b) for b in captioner._batches([captioner._prepare(r, i, {}) for i, r in enumerate(requests)])] == [3, 3, 1]
    assert captioner.caption_requests(requests) == one_by_one
    assert len(set(one_by_one)) > 1  # order is observable: captions differ between boxes
    budget = DenseCaptioner(merged, processor, max_new_tokens=8, token_budget=1)  # every box alone
    assert budget.caption_requests(requests) == one_by_one


def test_bad_input_names_the_item(base_dir, rows, tmp_path):
    model, processor = load_base_model(base_dir)
    captioner = DenseCaptioner(model, processor, max_new_tokens=4)
    image = Image.open(rows[0]["image"])
    with pytest.raises(ValueError, match="box 1.*zero or negative size"):
        captioner.caption(image, [[0, 0, 5, 5], [3, 3, 0, 4]])
    with pytest.raises(ValueError, match="box 0.*NaN"):
        captioner.caption(image, [[float("nan"), 0, 5, 5]])
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        captioner.caption(str(tmp_path / "broken.jpg"), [[0, 0, 5, 5]])
    with pytest.raises(ValueError, match="longer than the model's context"):
        DenseCaptioner(model, processor, max_new_tokens=600).caption(image, [[0, 0, 5, 5]])


def test_caption_dataset_skips_counts_and_logs(base_dir, rows, tmp_path):
    model, processor = load_base_model(base_dir)
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    data = [rows[0], dict(rows[1], bbox=[0, 0, -1, 3]), dict(rows[2], image=str(tmp_path / "broken.jpg")), rows[3]]
    rejects = RejectLog(tmp_path / "rejects.jsonl", stage="caption")
    results = list(DenseCaptioner(model, processor, max_new_tokens=4).caption_dataset(data, rejects, chunk_size=1))
    assert [r["index"] for r in results] == [0, 3]
    assert all(isinstance(r["caption"], str) for r in results)
    assert rejects.skipped == 2
    logged = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [entry["item_id"].split(" (")[0] for entry in logged] == ["row 1", "row 2"]


def test_resume_continues_from_the_checkpoint(base_dir, rows, trained, tmp_path):
    dataset = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    output_dir = tmp_path / "resumed"
    shutil.copytree(os.path.join(trained.output_dir, "checkpoint-10"), output_dir / "checkpoint-10")
    result = train(
        CaptionerModelArguments(base_model=base_dir, lora_r=8, lora_alpha=16, lora_dropout=0.0),
        CaptionerDataArguments(),
        CaptionerTrainingArguments(output_dir=str(output_dir), per_device_train_batch_size=4, gradient_accumulation_steps=1,
                                   learning_rate=3e-2, max_steps=20, warmup_ratio=0.0, lr_scheduler_type="constant",
                                   logging_steps=1, save_steps=0, seed=0, resume_from_checkpoint="latest"),
        train_dataset=dataset,
    )
    assert result.global_step == 20 and result.learning_rates[0][0] == 11  # steps 1-10 are not redone
    fresh = dict(trained.model.named_parameters())
    for name, param in result.model.named_parameters():
        if "lora_" in name:
            torch.testing.assert_close(param, fresh[name], rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_trains_the_same_adapter(base_dir, rows, tmp_path):
    dataset = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    results = {}
    for checkpointing in (False, True):
        results[checkpointing] = train(
            CaptionerModelArguments(base_model=base_dir, lora_r=8, lora_alpha=16, lora_dropout=0.0),
            CaptionerDataArguments(),
            CaptionerTrainingArguments(output_dir=str(tmp_path / f"gc-{checkpointing}"), per_device_train_batch_size=4,
                                       gradient_accumulation_steps=1, learning_rate=3e-2, max_steps=3,
                                       warmup_ratio=0.0, lr_scheduler_type="constant", logging_steps=1, save_steps=0,
                                       seed=0, gradient_checkpointing=checkpointing),
            train_dataset=dataset,
        )
    def checkpointing_on(model):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        return bool(getattr(base, "is_activation_checkpointing", None) or getattr(base, "is_gradient_checkpointing"))

    assert checkpointing_on(results[True].model) and not checkpointing_on(results[False].model)
    # Recomputing activations changes memory, not the result.
    plain, checkpointed = (dict(results[c].model.named_parameters()) for c in (False, True))
    for name, param in checkpointed.items():
        if "lora_" in name:
            torch.testing.assert_close(param, plain[name], rtol=1e-4, atol=1e-5)
    assert [loss for _, loss in results[True].losses] == pytest.approx([loss for _, loss in results[False].losses],
                                                                       rel=1e-4)
