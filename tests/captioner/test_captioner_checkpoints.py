"""Issue 27 item 6: the captioner keeps at most --save_total_limit checkpoints, each holding what a resume needs (the
trainable weights, optimizer, scheduler, RNG and data position), not a second copy of the frozen base model."""
import json
import shutil

import datasets
import pytest
import torch
from safetensors import safe_open

from captioner.finetune_data import CAPTION_FEATURES
from captioner.train import (
    STATE_FILE,
    CaptionerDataArguments,
    CaptionerModelArguments,
    CaptionerTrainingArguments,
    find_checkpoint,
    train,
)


def _args(output_dir, **training):
    defaults = dict(output_dir=str(output_dir), per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-2,
                    max_steps=4, warmup_ratio=0.0, lr_scheduler_type="linear", logging_steps=1, save_steps=1, seed=0)
    return CaptionerTrainingArguments(**{**defaults, **training})


def _model_args(base_dir, **lora):
    return CaptionerModelArguments(base_model=base_dir, **{**dict(lora_r=4, lora_alpha=8, lora_dropout=0.1), **lora})


def _data(rows):
    return datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)


def _checkpoints(folder):
    return sorted((p.name for p in folder.glob("checkpoint-*")), key=lambda name: int(name.split("-")[1]))


def test_the_default_limit_is_unires_s():
    from unires.training.arguments import UniRESTrainingArguments

    assert CaptionerTrainingArguments().save_total_limit == UniRESTrainingArguments().save_total_limit == 2
    with pytest.raises(ValueError, match="--save_total_limit must be 0"):
        CaptionerTrainingArguments(save_total_limit=-1)


@pytest.mark.parametrize("limit, kept", [(2, ["checkpoint-3", "checkpoint-4"]),
                                         (0, ["checkpoint-1", "checkpoint-2", "checkpoint-3", "checkpoint-4"])])
def test_only_the_newest_complete_checkpoints_are_kept(base_dir, rows, tmp_path, limit, kept):
    out = tmp_path / "out"
    train(_model_args(base_dir), CaptionerDataArguments(), _args(out, save_total_limit=limit), train_dataset=_data(rows))
    assert _checkpoints(out) == kept  # 4 saves, 'limit' kept (0: all)
    assert all((out / name / STATE_FILE).is_file() for name in kept)


def test_an_unfinished_checkpoint_is_neither_pruned_nor_resumed_from(base_dir, rows, tmp_path):
    out = tmp_path / "out"
    train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=2, save_steps=2), train_dataset=_data(rows))
    (out / "checkpoint-1").mkdir()  # saves cut short by a kill: no state file (nor weights)
    (out / "checkpoint-3").mkdir()
    assert find_checkpoint(str(out), "latest") == str(out / "checkpoint-2")
    train(_model_args(base_dir), CaptionerDataArguments(),
          _args(out, max_steps=4, save_total_limit=1, resume_from_checkpoint="latest"), train_dataset=_data(rows))
    # checkpoint-3 was rewritten whole by the resumed run; of the complete ones only the newest stays
    assert _checkpoints(out) == ["checkpoint-1", "checkpoint-4"]


@pytest.mark.parametrize("freeze_vision_tower", [True, False])
def test_a_checkpoint_holds_the_trainable_weights_and_resumes_exactly(base_dir, rows, tmp_path, freeze_vision_tower):
    lora = dict(freeze_vision_tower=freeze_vision_tower)
    straight = train(_model_args(base_dir, **lora), CaptionerDataArguments(), _args(tmp_path / "straight", save_steps=2),
                     train_dataset=_data(rows))
    trainable = {name: param for name, param in straight.model.named_parameters() if param.requires_grad}
    frozen = {name for name, param in straight.model.named_parameters() if not param.requires_grad}
    assert trainable and frozen

    checkpoint = tmp_path / "straight" / "checkpoint-2"
    with safe_open(checkpoint / "model.safetensors", framework="pt") as saved:
        names = set(saved.keys())
        saved_bytes = sum(saved.get_tensor(name).nbytes for name in names)
    assert names == set(trainable)  # the adapter (and a vision tower trained in full), no frozen base weight
    assert saved_bytes == sum(param.nbytes for param in trainable.values())
    assert not any(name.endswith("embed_tokens.weight") for name in names)

    # Resumed in a fresh folder from step 2 (dropout on: the RNG state must come back too) = the run never stopped.
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(checkpoint, resumed_dir / "checkpoint-2")
    resumed = train(_model_args(base_dir, **lora), CaptionerDataArguments(),
                    _args(resumed_dir, resume_from_checkpoint="latest"), train_dataset=_data(rows))
    # The losses logged before the checkpoint come back with it (the run's log history), then this run's.
    assert resumed.global_step == 4 and [step for step, _ in resumed.losses] == [1, 2, 3, 4]
    assert [loss for _, loss in resumed.losses] == pytest.approx([loss for _, loss in straight.losses], rel=1e-5)
    assert resumed.learning_rates == straight.learning_rates[2:]
    after = dict(resumed.model.named_parameters())
    for name, param in trainable.items():
        torch.testing.assert_close(after[name], param, rtol=1e-5, atol=1e-6, msg=name)
    assert json.loads((resumed_dir / "checkpoint-4" / STATE_FILE).read_text())["global_step"] == 4


def test_a_checkpoint_of_another_lora_configuration_is_refused_naming_it(base_dir, rows, tmp_path):
    out = tmp_path / "out"
    train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=1), train_dataset=_data(rows))
    with pytest.raises(ValueError, match=r"checkpoint-1/model.safetensors lacks \d+ trainable weight.*--freeze_vision_tower"):
        train(_model_args(base_dir, freeze_vision_tower=False), CaptionerDataArguments(),
              _args(out, max_steps=2, resume_from_checkpoint="latest"), train_dataset=_data(rows))


def test_a_checkpoint_of_the_whole_model_as_written_before_still_resumes(base_dir, rows, tmp_path):
    from safetensors.torch import load_file, save_file

    from captioner import add_lora, load_base_model

    straight = train(_model_args(base_dir), CaptionerDataArguments(), _args(tmp_path / "straight", save_steps=2),
                     train_dataset=_data(rows))
    old = tmp_path / "old" / "checkpoint-2"
    shutil.copytree(tmp_path / "straight" / "checkpoint-2", old)
    # What save_state wrote before: every weight of the model, the frozen base's included.
    model = add_lora(load_base_model(base_dir)[0], r=4, alpha=8, dropout=0.1)
    whole = {name: tensor.contiguous() for name, tensor in {**model.state_dict(), **load_file(old / "model.safetensors")}.items()}
    assert len(whole) > len(load_file(old / "model.safetensors"))
    save_file(whole, old / "model.safetensors")
    resumed = train(_model_args(base_dir), CaptionerDataArguments(), _args(tmp_path / "old", resume_from_checkpoint="latest"),
                    train_dataset=_data(rows))
    assert [loss for _, loss in resumed.losses] == pytest.approx([loss for _, loss in straight.losses], rel=1e-5)
    after = dict(resumed.model.named_parameters())
    for name, param in straight.model.named_parameters():
        torch.testing.assert_close(after[name], param, rtol=1e-5, atol=1e-6, msg=name)
