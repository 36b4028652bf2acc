"""Training with Accelerate: resume exactness, two processes, NaN stop, saved model and card."""

import json
import logging
import math
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
from tiny_models.unires import tiny_config_kwargs
from run_support.budget import measure_step_seconds, steps_for_budget
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
    # is exercised here, in fresh processes, rather than beside the fp32 tests), chosen by the launcher alone.
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
    ]  # no --mixed_precision for the script: the launcher's bf16 is the one used (issue 20, case 3)
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
    assert "world size 2 (MULTI_CPU" in done.stderr  # README's command for several processes on a CPU

    # Resumed by two processes, to train on: what is said about the resume is said once, not once per process.
    resumed = subprocess.run([*command, "--resume_from_checkpoint", "latest", "--max_steps", "4"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    for said in ("resuming at step 3 of a 3-step run; training on to --max_steps 4", "resumed from "):
        assert resumed.stderr.count(said) == 1, (said, resumed.stderr[-3000:])
    assert json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4


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
            torch.testing.assert_close(trained["vision_encoder." + name], value, rtol=0, atol=0, msg=name)
    # The new parts did train: they moved away from their (seeded) initial values.
    from accelerate.utils import set_seed

    set_seed(training_args.seed)
    initial = UniRESModel.from_clip(str(tmp_path / "clip"), **model_args.parsed_overrides()).state_dict()
    assert torch.equal(initial["vision_encoder.vision_model.embeddings.patch_embedding.weight"],
                       trained["vision_encoder.vision_model.embeddings.patch_embedding.weight"])
    assert not torch.allclose(initial["mask_head.projection.weight"], trained["mask_head.projection.weight"])


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


# -- issue 20: a real user's long run ---------------------------------------------------------------------------


def test_resume_with_a_larger_max_steps_trains_on_with_the_schedule_extended(setup, tmp_path, caplog):
    # Case 1: a finished 4-step run (warm-up 2) resumed with --max_steps 6 trains steps 5 and 6 on a cosine
    # recomputed for 6 steps, the warm-up kept at 2 (warmup_ratio 0.5 of 6 would make it 3).
    out = tmp_path / "longer"
    run_training(*_args(setup, out, max_steps=4, save_steps=2, warmup_ratio=0.5))
    # 16 images in batches of 4: step 4 ends an epoch, so the resume also starts from an epoch's end.
    at_four = load_file(out / "checkpoint-4" / "model.safetensors")
    with caplog.at_level(logging.INFO, logger="run_support.training_loop"):
        trainer, _ = run_training(*_args(setup, out, max_steps=6, warmup_ratio=0.5, resume_from_checkpoint="latest"))
    assert "resuming at step 4 of a 4-step run; training on to --max_steps 6" in caplog.text
    assert trainer.state.global_step == 6 and trainer.warmup_steps == 2
    lr = {record["step"]: record["lr"] for record in trainer.state.log_history if "lr" in record}
    for step in (5, 6):
        assert lr[step] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * (step - 2) / 4)), rel=1e-6), step
    assert lr[6] == pytest.approx(0.0, abs=1e-12)
    trained = _weights(out)
    assert any(not torch.allclose(at_four[k], trained[k]) for k in at_four)  # steps 5 and 6 did train
    assert json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())["requested_steps"] == 6


def test_a_reused_output_dir_is_refused_or_overwritten(setup, tmp_path):
    # Case 2: checkpoints of an earlier run are never mixed with a new run's.
    out = tmp_path / "reused"
    run_training(*_args(setup, out, max_steps=4, save_steps=2))
    with pytest.raises(FileExistsError) as refused:
        run_training(*_args(setup, out, max_steps=2, save_steps=1))
    message = str(refused.value)
    assert str(out.resolve()) in message and "--overwrite_output_dir" in message
    assert "--resume_from_checkpoint" in message and "checkpoint-4" in message
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]  # untouched

    run_training(*_args(setup, out, max_steps=1, save_steps=1, overwrite_output_dir=True))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]  # 'latest' is this run's


def _reset_accelerate_state():
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def fresh_accelerate_state():
    """The Accelerate state is one per process: start this test from none, and leave none behind."""
    _reset_accelerate_state()
    yield
    _reset_accelerate_state()


def test_mixed_precision_is_the_launchers_unless_given(setup, tmp_path, monkeypatch, fresh_accelerate_state):
    # Case 3: ACCELERATE_MIXED_PRECISION is what `accelerate launch --mixed_precision` and `accelerate config` set.
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert UniRESTrainingArguments().mixed_precision is None
    trainer, _ = run_training(*_args(setup, tmp_path / "launcher", max_steps=1))
    assert trainer.accelerator.mixed_precision == "bf16"
    assert "| mixed precision | bf16 |" in (tmp_path / "launcher" / "README.md").read_text()
    _reset_accelerate_state()
    trainer, _ = run_training(*_args(setup, tmp_path / "flag", max_steps=1, mixed_precision="no"))
    assert trainer.accelerator.mixed_precision == "no"  # the script's flag, when given, wins


def test_push_to_hub_offline_fails_before_anything_is_built(setup, tmp_path, monkeypatch):
    # Case 6: HF_HUB_OFFLINE=1 (as in every test) with --push_to_hub: an error in seconds, not after the run.
    import unires.training.run as run_module
    from unires.training.hub import HubPushError

    def never(*args, **kwargs):
        raise AssertionError("the model was built before the push was checked")

    monkeypatch.setattr(run_module, "build_model", never)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        run_training(*_args(setup, tmp_path / "offline", push_to_hub=True, hub_model_id="org/unires"))
    assert not (tmp_path / "offline" / "model.safetensors").exists()


@pytest.fixture
def fake_hub(monkeypatch):
    """An online Hub, faked at `HfApi`: records the calls, answers whoami with `fake_hub.user`."""
    import huggingface_hub
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    class Hub:
        user = {"name": "alice", "orgs": [], "auth": {"accessToken": {"role": "write"}}}
        login_error = None
        write_error = None

    def whoami(self, *args, **kwargs):
        calls.append(("whoami", self.token))
        if Hub.login_error:
            raise Hub.login_error
        return Hub.user

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs.get("private")))

    def auth_check(self, repo_id, **kwargs):
        calls.append(("auth_check", repo_id, kwargs.get("write")))
        if Hub.write_error:
            raise Hub.write_error

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs["repo_id"], sorted(p.name for p in Path(kwargs["folder_path"]).iterdir()),
                      kwargs["ignore_patterns"]))

    for name, fn in dict(whoami=whoami, create_repo=create_repo, auth_check=auth_check,
                         upload_folder=upload_folder).items():
        monkeypatch.setattr(huggingface_hub.HfApi, name, fn)
    Hub.calls = calls
    return Hub


def test_push_to_hub_checks_login_and_repo_before_the_first_step(setup, tmp_path, monkeypatch, fake_hub):
    import unires.training.run as run_module
    from unires.training.hub import HubPushError

    built = []
    original_build = run_module.build_model
    monkeypatch.setattr(run_module, "build_model", lambda args: built.append(len(fake_hub.calls)) or original_build(args))

    fake_hub.login_error = OSError("no token")
    with pytest.raises(HubPushError, match="cannot log in.*hf auth login.*--hub_token"):
        run_training(*_args(setup, tmp_path / "a", push_to_hub=True))
    fake_hub.login_error = None
    fake_hub.user = {"name": "alice", "auth": {"accessToken": {"role": "read"}}}
    with pytest.raises(HubPushError, match="read-only"):
        run_training(*_args(setup, tmp_path / "b", push_to_hub=True))
    fake_hub.user = {"name": "alice", "auth": {"accessToken": {"role": "write"}}}
    fake_hub.write_error = PermissionError("403")
    with pytest.raises(HubPushError, match="cannot write to the Hub repo 'other-org/unires'"):
        run_training(*_args(setup, tmp_path / "c", push_to_hub=True, hub_model_id="other-org/unires"))
    assert built == []  # every failure came before the model was built
    fake_hub.write_error = None
    fake_hub.calls.clear()

    # No --hub_model_id: the output folder's name under the user, as transformers' Trainer does.
    run_training(*_args(setup, tmp_path / "my-run", max_steps=1, push_to_hub=True, hub_token="hf_x",
                        hub_private_repo=True))
    names = [call[0] for call in fake_hub.calls]
    assert names == ["whoami", "create_repo", "auth_check", "upload_folder"]
    assert fake_hub.calls[0] == ("whoami", "hf_x")
    assert fake_hub.calls[1] == ("create_repo", "alice/my-run", True)
    assert built == [3]  # the model was built after the three checks
    _, repo, files, ignored = fake_hub.calls[3]
    assert repo == "alice/my-run" and "model.safetensors" in files and "checkpoint-*" in ignored and ".lock" in ignored
    assert "alice/my-run" in (tmp_path / "my-run" / "README.md").read_text()


def test_push_options_are_spelled_as_in_transformers_and_the_captioner():
    from transformers import HfArgumentParser

    from captioner.train import CaptionerTrainingArguments
    from unires.training.cli import _earlier_push_spelling

    argv = ["--push_to_hub", "--hub_model_id", "org/x", "--hub_token", "hf_x", "--hub_private_repo"]
    (unires_args,) = HfArgumentParser(UniRESTrainingArguments).parse_args_into_dataclasses(args=argv)
    (captioner_args,) = HfArgumentParser(CaptionerTrainingArguments).parse_args_into_dataclasses(args=argv)
    for parsed in (unires_args, captioner_args):
        assert (parsed.push_to_hub, parsed.hub_model_id, parsed.hub_token, parsed.hub_private_repo) == \
            (True, "org/x", "hf_x", True)
    # The earlier spelling of train.py still works, said in the new one.
    assert _earlier_push_spelling(["--push_to_hub", "org/x", "--hub_private", "--seed", "1"]) == \
        ["--push_to_hub", "--hub_model_id", "org/x", "--hub_private_repo", "--seed", "1"]
    assert _earlier_push_spelling(["--push_to_hub", "--max_steps", "3"]) == ["--push_to_hub", "--max_steps", "3"]
    old = UniRESTrainingArguments(push_to_hub="org/y")
    assert (old.push_to_hub, old.hub_model_id) == (True, "org/y")


def test_a_run_says_its_world_batch_destination_and_final_metrics(setup, tmp_path, caplog):
    # Case 8: what a user needs to read in the log, and a default that saves checkpoints.
    assert UniRESTrainingArguments().save_steps > 0
    out = tmp_path / "told"
    with caplog.at_level(logging.INFO):
        run_training(*_args(setup, out, max_steps=2, gradient_accumulation_steps=2, do_final_eval=True,
                            save_steps=UniRESTrainingArguments().save_steps))
    text = caplog.text
    assert "world size 1" in text
    assert "effective batch 8 = 4 per device x 1 process(es) x 2 accumulation" in text
    assert f"saved to {out.resolve()}" in text
    table = text[text.index("final metrics (validation, step 2)"):]
    assert "| mIoU |" in table and "| object+part |" in table and "| part |" in table
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()  # the default --save_steps saves the last step


def test_learning_rate_help_says_what_suits_which_start():
    from transformers import HfArgumentParser

    help_text = " ".join(HfArgumentParser(UniRESTrainingArguments).format_help().split())
    assert "1e-5 is the paper's, for fine-tuning from CLIP" in help_text
    assert "--config_name" in help_text and "1e-3" in help_text


def test_resuming_with_another_effective_batch_warns_naming_both(setup, tmp_path, caplog):
    out = tmp_path / "batch"
    run_training(*_args(setup, out, max_steps=2, save_steps=2))
    with caplog.at_level(logging.WARNING, logger="run_support.training_loop"):
        run_training(*_args(setup, out, max_steps=3, per_device_train_batch_size=2, resume_from_checkpoint="latest"))
    assert "effective batch of 4 (4 per device x 1 processes x 1 accumulation)" in caplog.text
    assert "effective batch of 2 (2 x 1 x 1)" in caplog.text


# -- issue 27: nothing leaks, nothing is lost ---------------------------------------------------------------------

SECRET = "hf_SECRETabcdefghijklmnopqrstuvwxyz0123"


@pytest.fixture
def uploaded(monkeypatch, fake_hub):
    """What each push would upload, by huggingface_hub's own selection (upload_folder's patterns and defaults)."""
    import huggingface_hub
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS

    files = []

    def upload_folder(self, *, folder_path, ignore_patterns=None, allow_patterns=None, **kwargs):
        monkeypatch.setattr(huggingface_hub.HfApi, "_validate_yaml", lambda *a, **k: None)  # a network call
        additions = self._prepare_upload_folder_additions(
            folder_path, "", allow_patterns=allow_patterns,
            ignore_patterns=[*(ignore_patterns or []), *DEFAULT_IGNORE_PATTERNS], repo_type="model")
        files.extend(Path(op.path_or_fileobj) for op in additions)

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return files


def test_the_hub_token_reaches_no_uploaded_file_no_tracker_and_no_log(setup, tmp_path, uploaded, caplog, capfd):
    # Case 1: TensorBoard (report_to's default when installed) used to write every argument, the token included,
    # to output_dir/unires/<time>/hparams.yml, and the push uploaded it.
    out = tmp_path / "leak"
    with caplog.at_level(logging.DEBUG):
        run_training(*_args(setup, out, max_steps=2, save_steps=1, report_to="tensorboard", push_to_hub=True,
                            hub_model_id="alice/leak", hub_token=SECRET, do_final_eval=True))
    names = sorted(p.relative_to(out).as_posix() for p in uploaded)
    assert "model.safetensors" in names and "README.md" in names and "config.json" in names
    assert not [name for name in names if "/" in name], names  # no tracker log, checkpoint or trace
    # The tracker logs exist, in runs/, and hold no secret either.
    assert list((out / "runs").rglob("events.out.tfevents.*")) and list((out / "runs").rglob("hparams.yml"))
    holding = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert holding == [], f"the token is written in {holding}"
    assert "learning_rate" in next((out / "runs").rglob("hparams.yml")).read_text()  # the other arguments are
    captured = capfd.readouterr()
    assert SECRET not in caplog.text + captured.out + captured.err


def _earlier_run(out, checkpoints=(2, 4), saved_model=True):
    """A folder as an earlier run leaves it: complete checkpoints, a data trace and (finished) the saved model."""
    for step in checkpoints:
        (out / f"checkpoint-{step}").mkdir(parents=True)
        (out / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (out / "data_trace").mkdir(parents=True)
    (out / "data_trace" / "rank0.txt").write_text("0\timage-0\n")
    if saved_model:
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"earlier weights")
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))


def test_overwrite_deletes_nothing_when_a_check_or_the_build_fails(setup, tmp_path, monkeypatch):
    # Case 2: --overwrite_output_dir --push_to_hub with the Hub offline removed the checkpoints, then failed.
    import unires.training.run as run_module
    from unires.training.hub import HubPushError

    out = tmp_path / "kept"
    before = _earlier_run(out)
    with pytest.raises(HubPushError, match="HF_HUB_OFFLINE"):
        run_training(*_args(setup, out, overwrite_output_dir=True, push_to_hub=True, hub_model_id="org/unires"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != ".lock") == before

    # Nor when the model cannot be built: the earlier run goes only when training starts.
    def broken(args):
        raise OSError("no such config")

    monkeypatch.setattr(run_module, "build_model", broken)
    with pytest.raises(OSError, match="no such config"):
        run_training(*_args(setup, out, overwrite_output_dir=True))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.name != ".lock") == before


def test_a_finished_run_without_checkpoints_is_refused_or_replaced(setup, tmp_path, monkeypatch):
    # Case 3: a `--save_steps 0` run leaves its saved model and no checkpoint; it used to be trained over silently.
    import unires.training.run as run_module

    out = tmp_path / "finished"
    run_training(*_args(setup, out, max_steps=1, save_steps=0))
    assert (out / "model.safetensors").is_file() and not list(out.glob("checkpoint-*"))
    original_build = run_module.build_model

    def never(args):
        raise AssertionError("the model was built before the folder was checked")

    monkeypatch.setattr(run_module, "build_model", never)
    with pytest.raises(FileExistsError) as refused:
        run_training(*_args(setup, out, max_steps=2, save_steps=0))
    message = str(refused.value)
    assert str(out.resolve()) in message and "saved model of an earlier run" in message
    assert "config.json, model.safetensors" in message and "--overwrite_output_dir" in message
    with pytest.raises(FileNotFoundError) as no_checkpoint:
        run_training(*_args(setup, out, max_steps=2, resume_from_checkpoint="latest"))
    message = str(no_checkpoint.value)
    assert f"no checkpoint in {out.resolve()}" in message and "saved model of a finished run" in message
    assert "--save_steps 0" in message and "--model_name_or_path" in message

    monkeypatch.setattr(run_module, "build_model", original_build)
    run_training(*_args(setup, out, max_steps=2, save_steps=0, overwrite_output_dir=True))
    log = json.loads((out / "training_log.json").read_text())
    assert [entry["step"] for entry in log if "loss" in entry] == [1, 2]  # this run's model replaced the earlier


def test_resuming_from_a_checkpoint_that_does_not_exist_says_so(setup, tmp_path, monkeypatch):
    # Issue 28, case 8: it said "not a checkpoint written by UniRESTrainer", after building the model.
    import unires.training.run as run_module

    def never(args):
        raise AssertionError("the model was built before the checkpoint was checked")

    monkeypatch.setattr(run_module, "build_model", never)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "b"
    _earlier_run(out, checkpoints=(2, 4), saved_model=False)
    (out / "checkpoint-6").mkdir()  # incomplete: a run killed while saving
    with pytest.raises(FileNotFoundError) as missing:
        run_training(*_args(setup, out, resume_from_checkpoint="b/checkpoint-999"))
    message = str(missing.value)
    assert message.startswith(f"--resume_from_checkpoint b/checkpoint-999: {out.resolve()}/checkpoint-999 does not "
                              "exist")
    assert f"the checkpoints in {out.resolve()} are checkpoint-2, checkpoint-4" in message
    with pytest.raises(FileNotFoundError, match=r"checkpoint-6 is not a complete checkpoint written by "
                                                r"UniRESTrainer \(it has no trainer_state.json\)"):
        run_training(*_args(setup, out, resume_from_checkpoint="b/checkpoint-6"))
    with pytest.raises(FileNotFoundError, match=r"does not exist; .*empty holds no checkpoint"):
        run_training(*_args(setup, tmp_path / "empty", resume_from_checkpoint="empty/checkpoint-1"))


def test_a_launch_whose_processes_do_not_see_each_other_says_how_to_launch_on_a_cpu(setup, tmp_path):
    # Case 7: `accelerate launch --multi_gpu` on a machine without a GPU starts processes that each train alone; the
    # second one was refused by the first one's lock as "in use by another run". Here this test holds the lock, as
    # rank 0 would, and the process is rank 1 of 2 without a process group.
    from run_support.output_dir import OutputDirLock

    out = tmp_path / "alone"
    lock = OutputDirLock.acquire(out)
    try:
        command = [sys.executable, str(REPO / "examples" / "train.py"), "--config_name", str(setup["config"]),
                   "--processor_name_or_path", str(setup["processor"]), "--dataset", str(setup["data_dir"]),
                   "--output_dir", str(out), "--max_steps", "1", "--report_to", "none"]
        env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "ACCELERATE_USE_CPU")}
        env.update(HF_HUB_OFFLINE="1", WORLD_SIZE="2", RANK="1", CUDA_VISIBLE_DEVICES="")
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        lock.release()
    assert done.returncode != 0
    assert "in use by another run" not in done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert "DistributedLaunchError: WORLD_SIZE=2: the launcher started 2 processes, but this one (RANK=1) runs " \
           "alone" in error and "do not see each other" in error, done.stderr[-3000:]
    assert "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 examples/train.py ...`" in error
