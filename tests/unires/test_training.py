"""Training with Accelerate: resume exactness, two processes, NaN stop, saved model and card."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dataset_scripts.mres_synth import build_mres_synth
from modeling_unires import UniRESConfig, UniRESModel, UniRESProcessor
from unires.training import (
    DataArguments,
    ModelArguments,
    MRESTrainingCollator,
    UniRESTrainer,
    UniRESTrainingArguments,
    run_training,
)
from modeling_unires.testing_utils import tiny_config_kwargs
from unires.training.budget import measure_step_seconds, steps_for_budget
from unires.training.trainer import UniRESTrainer
from unires.training.scratch import prepare_from_scratch, all_sentences

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = tiny_config_kwargs(image_size=48)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    data = build_mres_synth(root / "data", image_size=48, seed=3,
                            num_images={"train": 16, "validation": 4, "test": 2, "test_unseen": 2})
    prepare_from_scratch(all_sentences(data["train"]), root, config_kwargs=TINY_CONFIG, vocab_size=800)
    return {"root": root, "data": data, "data_dir": root / "data", "config": root / "config",
            "processor": root / "processor"}


def _args(setup, output_dir, **overrides):
    model_args = ModelArguments(config_name=str(setup["config"]), processor_name_or_path=str(setup["processor"]))
    data_args = DataArguments(dataset=[str(setup["data_dir"])], referents_per_image=2, max_eval_images=2)
    values = dict(output_dir=str(output_dir), per_device_train_batch_size=4, learning_rate=1e-3, max_steps=4,
                  logging_steps=1, report_to="none", disable_progress_bar=True, do_final_eval=False, seed=7)
    values.update(overrides)
    return model_args, data_args, UniRESTrainingArguments(**values)


def _weights(folder):
    model = UniRESModel.from_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_continues_exactly(setup, tmp_path, monkeypatch):
    # 16 images / batch 4 = 4 batches an epoch: the crash at step 3 is mid-epoch and the
    # resumed half crosses an epoch boundary.
    run_training(*_args(setup, tmp_path / "straight", max_steps=6))

    original_save = UniRESTrainer.save_checkpoint

    def save_then_crash(self):
        folder = original_save(self)
        raise KeyboardInterrupt(f"simulated crash after writing {folder}")

    monkeypatch.setattr(UniRESTrainer, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        run_training(*_args(setup, tmp_path / "crashed", max_steps=6, save_steps=3))
    monkeypatch.setattr(UniRESTrainer, "save_checkpoint", original_save)
    checkpoint = tmp_path / "crashed" / "checkpoint-3"
    assert not (tmp_path / "crashed" / "model.safetensors").exists()

    run_training(*_args(setup, tmp_path / "crashed", max_steps=6, resume_from_checkpoint="latest"))

    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "crashed")
    at_crash = load_file(checkpoint / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name in straight:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-5, atol=1e-6, msg=name)
    # The resumed half really trained: the weights moved on from the crash point.
    assert any(not torch.allclose(at_crash[k], resumed[k]) for k in at_crash)


def test_final_model_card_and_loss_log(setup, tmp_path):
    trainer, metrics = run_training(*_args(setup, tmp_path / "run", max_steps=3, do_final_eval=True))
    folder = tmp_path / "run"
    card = (folder / "README.md").read_text()
    assert "pipeline_tag: image-segmentation" in card and "mIoU" in card and "AdamW" in card
    # The paper's decoder (no pooling, no pixel branch) lists no departures from it.
    assert "| decoder | width 32, stage 1: 1 layer(s), stage 2: 1 layer(s) |" in card
    assert metrics["object+part"]["count"] > 0
    log = json.loads((folder / "training_log.json").read_text())
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in log if "loss" in entry)
    # The saved folder is a complete checkpoint: model and processor load with the Auto classes.
    from transformers import AutoModel, AutoProcessor

    assert isinstance(AutoModel.from_pretrained(folder), UniRESModel)
    assert AutoProcessor.from_pretrained(folder).tokenizer is not None


def test_nan_loss_stops_with_the_step(setup, tmp_path, monkeypatch):
    original = UniRESModel.forward

    def forward_with_nan_at_step_two(self, *args, **kwargs):
        output = original(self, *args, **kwargs)
        forward_with_nan_at_step_two.calls += 1
        if forward_with_nan_at_step_two.calls == 2:
            output.loss = output.loss * float("nan")
        return output

    forward_with_nan_at_step_two.calls = 0
    monkeypatch.setattr(UniRESModel, "forward", forward_with_nan_at_step_two)
    with pytest.raises(FloatingPointError, match="at step 2"):
        run_training(*_args(setup, tmp_path / "nan", max_steps=4))


def test_bad_arguments_are_named(setup, tmp_path):
    model_args, data_args, training_args = _args(setup, tmp_path / "bad")
    model_args.ablation = "half_tokens"
    with pytest.raises(ValueError, match="half_tokens"):
        run_training(model_args, data_args, training_args)
    model_args, data_args, training_args = _args(setup, tmp_path / "bad")
    data_args.dataset_weights = [1.0, 2.0]
    with pytest.raises(ValueError, match="2 dataset weights for 1 datasets"):
        run_training(model_args, data_args, training_args)


def test_two_processes_see_different_data(setup, tmp_path):
    # Also the mixed-precision path: bf16 autocast on CPU (one Accelerate state per process, so it
    # is exercised here, in fresh processes, rather than beside the fp32 tests).
    output = tmp_path / "ddp"
    # `--multi_gpu` selects Accelerate's torchrun launcher; with no GPU present the two
    # processes run as MULTI_CPU over gloo (`--cpu` alone would start a single process).
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "bf16", "--dynamo_backend", "no",
        str(REPO / "examples" / "train.py"),
        "--config_name", str(setup["config"]), "--processor_name_or_path", str(setup["processor"]),
        "--dataset", str(setup["data_dir"]), "--referents_per_image", "2", "--max_eval_images", "2",
        "--per_device_train_batch_size", "2", "--max_steps", "3", "--learning_rate", "1e-3",
        "--output_dir", str(output), "--report_to", "none", "--trace_data", "--disable_progress_bar",
        "--mixed_precision", "bf16",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    seen = {}
    for rank in (0, 1):
        lines = (output / "data_trace" / f"rank{rank}.txt").read_text().split("\n")
        seen[rank] = {line.split("\t")[1] for line in lines if line}
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1], f"both ranks trained on {seen[0] & seen[1]}"
    model = UniRESModel.from_pretrained(output)
    assert model.config.model_type == "unires"
    assert "| mixed precision | bf16 |" in (output / "README.md").read_text()


def test_streaming_mixture_with_tensorboard(setup, tmp_path):
    # Two copies of the data as two "datasets" mixed by weight, streamed, logged to TensorBoard.
    model_args, data_args, training_args = _args(
        setup, tmp_path / "stream", max_steps=3, report_to="tensorboard", trace_data=True
    )
    data_args.dataset = [str(setup["data_dir"]), str(setup["data_dir"])]
    data_args.dataset_weights = [3.0, 1.0]
    data_args.streaming = True
    data_args.shuffle_buffer_size = 8
    trainer, _ = run_training(model_args, data_args, training_args)
    assert hasattr(trainer.train_dataset, "__iter__") and not hasattr(trainer.train_dataset, "__len__")
    seen = (tmp_path / "stream" / "data_trace" / "rank0.txt").read_text().split()
    assert len(seen) == 2 * 3 * 4  # (step, image id) pairs: 3 steps of 4 images
    assert list((tmp_path / "stream").rglob("events.out.tfevents.*")), "no TensorBoard event file"
    log = json.loads((tmp_path / "stream" / "training_log.json").read_text())
    assert all(torch.isfinite(torch.tensor(entry["loss"])) for entry in log if "loss" in entry)


def test_training_from_a_clip_checkpoint(setup, tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from modeling_unires import UniRESProcessor

    tokenizer = UniRESProcessor.from_pretrained(setup["processor"]).tokenizer
    clip_config = CLIPConfig(
        vision_config=TINY_CONFIG["vision_config"],
        text_config=dict(TINY_CONFIG["text_config"], vocab_size=len(tokenizer), max_position_embeddings=17,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(clip_config).save_pretrained(tmp_path / "clip")
    CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 48}, crop_size=48), tokenizer).save_pretrained(
        tmp_path / "clip"
    )
    clip_vision = load_file(tmp_path / "clip" / "model.safetensors")
    model_args = ModelArguments(clip_name_or_path=str(tmp_path / "clip"),
                                config_overrides=json.dumps({k: v for k, v in TINY_CONFIG.items()
                                                             if k not in ("vision_config", "text_config")}))
    _, data_args, training_args = _args(setup, tmp_path / "from_clip", max_steps=2, backbone_learning_rate=0.0)
    trainer, _ = run_training(model_args, data_args, training_args)
    trained = _weights(tmp_path / "from_clip")
    # Backbone learning rate 0: the CLIP towers are still exactly the checkpoint's after training.
    for name, value in clip_vision.items():
        if name.startswith("vision_model."):
            torch.testing.assert_close(trained[name], value, rtol=0, atol=0, msg=name)
    # The new parts did train: they moved away from their (seeded) initial values.
    from accelerate.utils import set_seed

    set_seed(training_args.seed)
    initial = UniRESModel.from_clip(str(tmp_path / "clip"), **model_args.parsed_overrides()).state_dict()
    assert torch.equal(initial["vision_model.embeddings.patch_embedding.weight"],
                       trained["vision_model.embeddings.patch_embedding.weight"])
    assert not torch.allclose(initial["mask_head.weight"], trained["mask_head.weight"])


def test_gradient_accumulation_counts_optimizer_steps(setup, tmp_path):
    model_args, data_args, training_args = _args(
        setup, tmp_path / "accumulate", max_steps=2, gradient_accumulation_steps=2, trace_data=True,
        gradient_checkpointing=True,
    )
    run_training(model_args, data_args, training_args)
    lines = (tmp_path / "accumulate" / "data_trace" / "rank0.txt").read_text().split("\n")
    steps = [int(line.split("\t")[0]) for line in lines if line]
    # Two micro-batches of 4 images per optimisation step: 8 images seen at step 0, 8 at step 1.
    assert steps == [0] * 8 + [1] * 8
    log = json.loads((tmp_path / "accumulate" / "training_log.json").read_text())
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2]


def test_budget_probe_reads_rows_and_leaves_the_model_alone(setup):
    model = UniRESModel(UniRESConfig.from_pretrained(setup["config"]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    collator = MRESTrainingCollator(UniRESProcessor.from_pretrained(setup["processor"]), 2, seed=0)
    rng = torch.random.get_rng_state()
    # A datasets.Dataset is read (images and masks decoded) inside the timing, as the training loop reads it.
    seconds = measure_step_seconds(model, collator, setup["data"]["train"], batch_size=2, steps=2)
    assert seconds > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert steps_for_budget(60, 0.5) == 120 and steps_for_budget(1, 0.5) == 10
    with pytest.raises(ValueError, match="at least one row"):
        measure_step_seconds(model, collator, [], batch_size=2)
    with pytest.raises(ValueError, match="must be positive"):
        steps_for_budget(0, 0.5)


def test_time_budget_replans_the_run_and_the_schedule(setup, tmp_path):
    # A fake clock: every optimisation step takes 10 s, the budget is 1 minute, the first plan 50 steps.
    model_args, data_args, training_args = _args(setup, tmp_path / "budget", max_steps=50, max_train_minutes=1.0,
                                                 warmup_ratio=0.1, logging_steps=1)
    from unires.training.run import build_model, build_processor

    model = build_model(model_args)
    trainer = UniRESTrainer(model, build_processor(model_args, model), training_args, data_args,
                            setup["data"]["train"])
    ticks = iter(range(0, 10_000, 10))
    trainer.clock = lambda: float(next(ticks))
    trainer.train()
    # Start at t=0, warm-up steps 1-3 end at t=30, then 10 s a step: the budget ends at step 6.
    assert trainer.state.global_step == trainer.max_steps == trainer.state.planned_steps == 6
    # The cosine schedule ran to the end of the re-planned run, not of the first plan.
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(0.0, abs=1e-12)
    assert [record["step"] for record in trainer.state.log_history] == [1, 2, 3, 4, 5, 6]


def test_run_training_takes_config_and_collator_objects(setup, tmp_path):
    # Nothing read back from disk: the config object and the collator given are the ones used.
    model_args, data_args, training_args = _args(setup, tmp_path / "objects", max_steps=2)
    processor = UniRESProcessor.from_pretrained(setup["processor"])
    config = UniRESConfig.from_pretrained(setup["config"], decoder_stage2_layers=2)
    collator = MRESTrainingCollator(processor, referents_per_image=1, seed=3)
    model_args.config_name = str(tmp_path / "no-such-config")  # would fail if it were read
    trainer, _ = run_training(model_args, data_args, training_args, config=config, processor=processor,
                              collator=collator, train_dataset=setup["data"]["train"])
    assert trainer.collator is collator
    assert trainer.accelerator.unwrap_model(trainer.model).config.decoder_stage2_layers == 2
    with pytest.raises(ValueError, match="a model or a config"):
        run_training(model_args, data_args, training_args, config=config, model=UniRESModel(config))
