"""Training that fails loudly, keeps every rank stepping and counts every row; adapters loaded by Hub id."""
import json
import logging
import math
import os
import shutil

import datasets
import pytest
import torch
from accelerate import Accelerator

from captioner import CaptionCollator, add_lora, load_base_model, load_captioner
from captioner.finetune_data import CAPTION_FEATURES
from tiny_models.captioner import save_tiny_captioner
from captioner.train import (
    CaptionerDataArguments,
    CaptionerModelArguments,
    CaptionerTrainingArguments,
    NoSupervisedTokensError,
    train,
    caption_loss,
)
from run_support.rejects import RejectLog

THINKING_TEMPLATE = (  # Qwen-style, but the generation prompt opens a <think> block the rendered answer lacks
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{% endif %}"
)


def _args(output_dir, **training):
    defaults = dict(output_dir=str(output_dir), per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=1e-2,
                    max_steps=2, warmup_ratio=0.0, lr_scheduler_type="constant", logging_steps=1, save_steps=0, seed=0)
    return CaptionerTrainingArguments(**{**defaults, **training})


def _model_args(base_dir):
    return CaptionerModelArguments(base_model=base_dir, lora_r=4, lora_alpha=8, lora_dropout=0.0)


def test_a_template_that_cannot_supervise_stops_before_training(base_dir, rows, tmp_path):
    _, processor = load_base_model(base_dir)
    processor.chat_template = THINKING_TEMPLATE
    with pytest.raises(ValueError, match="generation prompt is not a prefix of prompt \\+ answer"):
        CaptionCollator(processor)
    thinking = tmp_path / "thinking_base"
    shutil.copytree(base_dir, thinking)
    processor.save_pretrained(thinking)
    with pytest.raises(ValueError, match="generation prompt is not a prefix"):
        train(_model_args(str(thinking)), CaptionerDataArguments(), _args(tmp_path / "out"),
              train_dataset=datasets.Dataset.from_list(rows, features=CAPTION_FEATURES))
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()  # no all-zero adapter, no model card


def test_training_stops_when_the_first_rows_yield_no_supervised_token(base_dir, rows, tmp_path):
    bad = [dict(row, bbox=[0, 0, 0, 5]) for row in rows] * 2
    with pytest.raises(NoSupervisedTokensError, match="None of the first 8 training rows.*bad item: 8"):
        train(_model_args(base_dir), CaptionerDataArguments(check_first_rows=8), _args(tmp_path / "out", max_steps=5),
              train_dataset=datasets.Dataset.from_list(bad, features=CAPTION_FEATURES))
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()


def test_a_caption_that_merges_with_the_prompt_is_a_counted_reject(base_dir, rows):
    _, processor = load_base_model(base_dir)
    rejects = RejectLog(stage="unit")
    batch = CaptionCollator(processor, rejects=rejects)([dict(rows[2], caption="\nwheel of car"), rows[3]])
    assert batch["input_ids"].shape[0] == 1 and "placeholder" not in batch
    assert (rejects.kept, rejects.skipped) == (1, 1)
    assert "malformed caption" in rejects.records[0]["reason"]


def test_an_all_rejected_micro_batch_still_runs_forward_and_backward_at_zero_loss(base_dir, rows):
    model, processor = load_base_model(base_dir)
    model = add_lora(model, r=4, alpha=8, dropout=0.0)
    model.train()
    rejects = RejectLog(stage="unit")
    placeholder = CaptionCollator(processor, rejects=rejects)([dict(row, bbox=[0, 0, -1, 5]) for row in rows])
    assert placeholder["placeholder"] is True and rejects.skipped == 4 and rejects.kept == 0
    calls = []
    handle = model.get_base_model().model.language_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        loss, counted = caption_loss(model, placeholder)
        assert not counted
        (loss * 0.0).backward()  # what the loop does with a batch that is not counted
    finally:
        handle.remove()
    assert calls == [1]  # the model ran, so its gradient hooks (DDP's all-reduce) fire as on every other rank
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    assert lora and all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in lora)


def test_reject_counts_survive_dataloader_workers(base_dir, rows, tmp_path):
    data = rows + [dict(rows[0], caption="\nmerged with the prompt")]  # 4 good rows, 1 malformed
    result = train(_model_args(base_dir), CaptionerDataArguments(), _args(tmp_path / "out", per_device_train_batch_size=5,
                                                                      dataloader_num_workers=1),
                   train_dataset=datasets.Dataset.from_list(data, features=CAPTION_FEATURES))
    assert result.global_step == 2
    assert (result.rejects.kept, result.rejects.skipped) == (8, 2)  # two epochs of one batch each
    logged = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    assert len(logged) == 2 and all("malformed caption" in entry["reason"] for entry in logged)


# -- adapters by Hub id ------------------------------------------------------------------------

# Files that loaders look for; the Hub cache marks the ones a repository lacks under .no_exist/<commit>/.
PROBED_FILES = ("config.json", "adapter_config.json", "preprocessor_config.json", "processor_config.json", "video_preprocessor_config.json",
                "chat_template.json", "chat_template.jinja", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
                "added_tokens.json", "vocab.json", "merges.txt", "generation_config.json", "model.safetensors",
                "model.safetensors.index.json", "adapter_model.safetensors", "adapter_model.bin", "custom_generate/generate.py")


def _snapshot(cache, repo_id, folder):
    """Lay ``folder`` out as the Hub cache does after a download of ``repo_id`` (refs/main → snapshots/<commit>/,
    absent files marked under .no_exist/), so that offline loading by id behaves as it does online."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    for name in PROBED_FILES:
        if not (repo / "snapshots" / commit / name).exists():
            (repo / ".no_exist" / commit / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / ".no_exist" / commit / name).touch()


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_an_adapter_by_hub_id_is_recognised_merged_and_takes_base_model(trained, hub_cache, tmp_path):
    _snapshot(hub_cache, "org/tiny-captioner", trained.output_dir)
    other_base = save_tiny_captioner(tmp_path / "other_base", seed=1)
    _snapshot(hub_cache, "org/other-base", other_base)

    merged, _ = load_captioner("org/tiny-captioner", merge=True)
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    unmerged, _ = load_captioner("org/tiny-captioner", merge=False)
    assert any("lora_" in name for name, _ in unmerged.named_parameters())
    reference, _ = load_captioner(trained.output_dir, merge=True)
    for (name, param), (_, expected) in zip(merged.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(param, expected, msg=name)

    rebased, _ = load_captioner("org/tiny-captioner", base_model="org/other-base", merge=True)
    other, _ = load_base_model(other_base)
    embed = "model.language_model.embed_tokens.weight"  # not adapted by LoRA: it is the base's own
    assert torch.equal(rebased.state_dict()[embed], other.state_dict()[embed])
    assert not torch.equal(rebased.state_dict()[embed], merged.state_dict()[embed])


def test_a_base_model_by_hub_id_is_not_taken_for_an_adapter(base_dir, hub_cache):
    _snapshot(hub_cache, "org/tiny-base", base_dir)
    model, processor = load_captioner("org/tiny-base")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    with pytest.raises(OSError):
        load_captioner("org/not-in-the-cache")


def test_training_steps_through_micro_batches_whose_rows_are_all_rejected(base_dir, rows, tmp_path):
    bad = [dict(row, bbox=[0, 0, 0, 5]) for row in rows[:2]]
    data = datasets.Dataset.from_list(rows[:2] + bad, features=CAPTION_FEATURES)
    result = train(_model_args(base_dir), CaptionerDataArguments(), _args(tmp_path / "out", per_device_train_batch_size=2, max_steps=6),
                   train_dataset=data)
    assert result.global_step == 6  # three epochs of two micro-batches, some of them all rejected (seeded shuffle)
    assert (result.rejects.kept, result.rejects.skipped) == (6, 6)
    assert len(result.losses) < 6  # placeholder steps log no loss


def _ddp_rank(rank, world_size, port, base_dir, rows, output_dir, results):
    """One process of a 2-process CPU (gloo) run: rank 1's rows are all rejected."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size), ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    try:
        data = rows if rank == 0 else [dict(row, bbox=[0, 0, 0, 5]) for row in rows]
        # A linear decay over the 2 steps: stepped once per optimizer step, not once per process and step.
        result = train(_model_args(base_dir), CaptionerDataArguments(), _args(output_dir, per_device_train_batch_size=2,
                                                                          lr_scheduler_type="linear"),
                       train_dataset=datasets.Dataset.from_list(data, features=CAPTION_FEATURES))
        results.put((rank, result.global_step, result.rejects.kept, result.rejects.skipped, result.learning_rates))
    except Exception as error:  # reported to the test, which names it
        results.put((rank, repr(error)))


def test_every_rank_steps_when_one_ranks_micro_batches_are_all_rejected(base_dir, rows, tmp_path):
    import multiprocessing
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_ddp_rank, args=(rank, 2, port, base_dir, rows, str(tmp_path / "out"), results)) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    hung = [process.is_alive() for process in processes]
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(timeout=30)  # reaped: a hung rank must not outlive the test holding its port and folder
    assert not any(hung), "a rank waited forever on the gradient synchronisation"
    reports = sorted(results.get(timeout=5) for _ in processes)
    assert [report[:4] for report in reports] == [(0, 2, 4, 0), (1, 2, 0, 4)], reports  # rank 1 only on placeholders
    for report in reports:  # half the decay after step 1 of 2 (a prepared scheduler had ended it there)
        assert [(step, pytest.approx(lr)) for step, lr in report[4]] == [(1, 5e-3), (2, 0.0)], reports
    assert (tmp_path / "out" / "rejects.rank1.jsonl").exists()  # one rejects file per rank, never shared


# -- issue 20: the captioner's trainer agrees with UniRES's ---------------------------------------------------------


def test_resume_with_a_larger_max_steps_trains_on_keeping_the_warmup(base_dir, rows, tmp_path, caplog):
    data = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    out = tmp_path / "out"
    cosine = dict(lr_scheduler_type="cosine", warmup_ratio=0.5)  # warm-up 1 of 2 steps (of 4 it would be 2)
    first = train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=2, save_steps=2, **cosine),
                  train_dataset=data)
    assert first.global_step == 2 and (out / "checkpoint-2").is_dir()
    with caplog.at_level(logging.INFO, logger="run_support.training_loop"):
        result = train(_model_args(base_dir), CaptionerDataArguments(),
                       _args(out, max_steps=4, resume_from_checkpoint="latest", **cosine), train_dataset=data)
    assert "resuming at step 2 of a 2-step run; training on to --max_steps 4" in caplog.text
    assert result.global_step == 4
    # Cosine recomputed for 4 steps after a warm-up of 1: the rate after step s is 1e-2 * (1 + cos(pi (s-1)/3)) / 2.
    expected = [(step, pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 3)), abs=1e-9)) for step in (3, 4)]
    assert result.learning_rates == expected


@pytest.fixture
def fresh_accelerate_state():
    """The Accelerate state is one per process: start this test from none, and leave none behind."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_mixed_precision_is_the_launchers_unless_given(base_dir, rows, tmp_path, monkeypatch, fresh_accelerate_state):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert CaptionerTrainingArguments().mixed_precision is None
    train(_model_args(base_dir), CaptionerDataArguments(), _args(tmp_path / "out", max_steps=1),
          train_dataset=datasets.Dataset.from_list(rows, features=CAPTION_FEATURES))
    assert "mixed precision bf16" in (tmp_path / "out" / "README.md").read_text()


def test_push_to_hub_is_checked_before_the_model_is_loaded(base_dir, rows, tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    import captioner.train as captioner_train

    def never(*args, **kwargs):
        raise AssertionError("the base model was loaded before the push was checked")

    monkeypatch.setattr(captioner_train, "load_base_model", never)
    data = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    # Offline (as every test runs), and no --hub_model_id: an error before training, not after it.
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        train(_model_args(base_dir), CaptionerDataArguments(), _args(tmp_path / "a", push_to_hub=True), train_dataset=data)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    calls = []

    def whoami(self, *args, **kwargs):
        calls.append(("whoami", self.token))
        if self.token == "bad":
            raise OSError("401 Unauthorized")
        return {"name": "alice", "auth": {"accessToken": {"role": "write"}}}

    monkeypatch.setattr(huggingface_hub.HfApi, "whoami", whoami)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", repo_id)))
    monkeypatch.setattr(huggingface_hub.HfApi, "auth_check", lambda self, repo_id, **kw: calls.append(("auth_check", repo_id)))
    with pytest.raises(RuntimeError, match="cannot log in.*--hub_token"):
        train(_model_args(base_dir), CaptionerDataArguments(), _args(tmp_path / "b", push_to_hub=True, hub_token="bad"),
              train_dataset=data)
    calls.clear()
    with pytest.raises(AssertionError, match="loaded before"):  # checks passed: training starts (and stops here)
        train(_model_args(base_dir), CaptionerDataArguments(), _args(tmp_path / "my-captioner", push_to_hub=True),
              train_dataset=data)
    assert calls == [("whoami", None), ("create_repo", "alice/my-captioner"), ("auth_check", "alice/my-captioner")]


# -- one run per output folder, as UniRES training (run_support.output_dir) ----------------------------------------


def _never_load(*args, **kwargs):
    raise AssertionError("the base model was loaded before the output folder was claimed")


def test_a_second_run_into_a_folder_a_live_run_holds_fails_naming_it(base_dir, rows, tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys

    import captioner.train as captioner_train
    from run_support.output_dir import OutputDirInUseError

    out = tmp_path / "out"
    holder = subprocess.Popen(  # a live run: holds the lock until stopped
        [sys.executable, "-c", "import sys, time; from run_support.output_dir import OutputDirLock; "
         "OutputDirLock.acquire(sys.argv[1]); print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(captioner_train, "load_base_model", _never_load)
        with pytest.raises(OutputDirInUseError) as refused:
            train(_model_args(base_dir), CaptionerDataArguments(), _args(out),
                  train_dataset=datasets.Dataset.from_list(rows, features=CAPTION_FEATURES))
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        holder.stdout.close()
    message = str(refused.value)
    assert f"output_dir {out.resolve()} is in use by another run (pid {holder.pid} on " in message
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written beside the live run's files


def test_a_folder_with_checkpoints_is_refused_or_overwritten(base_dir, rows, tmp_path, monkeypatch):
    import captioner.train as captioner_train
    from run_support.output_dir import OutputDirLock

    data = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    out = tmp_path / "out"
    train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=2, save_steps=1), train_dataset=data)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert str(out.resolve()) not in OutputDirLock._held  # released at the end of the run

    with monkeypatch.context() as patch:
        patch.setattr(captioner_train, "load_base_model", _never_load)  # refused before any work
        with pytest.raises(FileExistsError) as refused:
            train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=1, save_steps=1),
                  train_dataset=data)
    message = str(refused.value)
    assert str(out.resolve()) in message and "checkpoint-1, checkpoint-2" in message
    assert "--overwrite_output_dir" in message and "--resume_from_checkpoint" in message
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]  # untouched
    assert str(out.resolve()) not in OutputDirLock._held  # a refused run does not keep the folder

    result = train(_model_args(base_dir), CaptionerDataArguments(),
                   _args(out, max_steps=1, save_steps=1, overwrite_output_dir=True), train_dataset=data)
    assert result.global_step == 1
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]  # this run's only: 'latest' is it
    assert json.loads((out / "checkpoint-1" / "captioner_training_state.json").read_text())["planned_steps"] == 1
    assert (out / "adapter_model.safetensors").is_file()


def test_overwrite_deletes_nothing_when_a_later_check_fails(base_dir, rows, tmp_path, monkeypatch):
    # Issue 27 item 2: --overwrite_output_dir removed the old checkpoints, then the push check failed.
    import captioner.train as captioner_train

    data = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    out = tmp_path / "out"
    train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=2, save_steps=1), train_dataset=data)
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != ".lock")
    monkeypatch.setattr(captioner_train, "load_base_model", _never_load)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):  # offline, as every test runs: the push cannot succeed
        train(_model_args(base_dir), CaptionerDataArguments(),
              _args(out, max_steps=1, save_steps=1, overwrite_output_dir=True, push_to_hub=True), train_dataset=data)
    with pytest.raises(FileNotFoundError, match=r"checkpoint-9 does not exist; the checkpoints in .* are checkpoint-1, checkpoint-2"):
        train(_model_args(base_dir), CaptionerDataArguments(),
              _args(out, max_steps=3, resume_from_checkpoint=str(out / "checkpoint-9")), train_dataset=data)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != ".lock") == before


def test_a_finished_run_without_checkpoints_is_not_trained_over_silently(base_dir, rows, tmp_path, monkeypatch):
    # Issue 27 item 3: the rule looked only at checkpoint-*, so a --save_steps 0 run's adapter was overwritten.
    import captioner.train as captioner_train

    data = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    out = tmp_path / "out"
    train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=1, save_steps=0), train_dataset=data)
    adapter = (out / "adapter_model.safetensors").read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(captioner_train, "load_base_model", _never_load)
        with pytest.raises(FileExistsError, match="saved model of an earlier run.*adapter_model.safetensors.*--overwrite_output_dir"):
            train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=2, save_steps=0), train_dataset=data)
    assert (out / "adapter_model.safetensors").read_bytes() == adapter
    result = train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=2, save_steps=0, overwrite_output_dir=True),
                   train_dataset=data)
    assert result.global_step == 2 and (out / "adapter_model.safetensors").read_bytes() != adapter


def test_another_rank_does_not_repeat_the_resume_and_loss_lines(base_dir, rows, tmp_path, monkeypatch, caplog):
    # Issue 28 item 8: in a 2-process run each INFO line about resuming was printed twice, once per rank.
    import captioner.train as captioner_train

    data = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
    out = tmp_path / "out"
    train(_model_args(base_dir), CaptionerDataArguments(), _args(out, max_steps=2, save_steps=2), train_dataset=data)
    # This process as rank 1 of a run: rank 0 made the checks (on_main_process), and it is not the main process.
    import run_support.run_claim
    import run_support.training_loop

    for module in (run_support.run_claim, run_support.training_loop):
        monkeypatch.setattr(module, "on_main_process", lambda accelerator, fn: fn())
    monkeypatch.setattr(Accelerator, "is_main_process", property(lambda self: False))
    with caplog.at_level(logging.INFO):
        result = train(_model_args(base_dir), CaptionerDataArguments(),
                       _args(out, max_steps=3, resume_from_checkpoint="latest"), train_dataset=data)
    assert result.global_step == 3 and result.losses  # it trained, resumed, and kept its losses
    ours = ("captioner.train", "run_support.training_loop")
    assert [r.getMessage() for r in caplog.records if r.name in ours and r.levelno >= logging.INFO] == []


def test_a_launch_whose_processes_do_not_see_each_other_says_how_to_launch_on_a_cpu(
        base_dir, rows, tmp_path, monkeypatch, fresh_accelerate_state):
    # Issue 27 case 7, as for UniRES: rank 1 of 2 without a process group (`accelerate launch --multi_gpu` on a machine
    # without a GPU) was refused by rank 0's lock as "in use by another run". The test holds the lock, as rank 0 would.
    from run_support.main_process import DistributedLaunchError
    from run_support.output_dir import OutputDirLock

    import captioner.train as captioner_train

    monkeypatch.setattr(captioner_train, "load_base_model", _never_load)
    for name in ("LOCAL_RANK", "ACCELERATE_USE_CPU", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "alone"
    lock = OutputDirLock.acquire(out)
    try:
        data = datasets.Dataset.from_list(rows, features=CAPTION_FEATURES)
        with pytest.raises(DistributedLaunchError) as error:
            train(_model_args(base_dir), CaptionerDataArguments(), _args(out), train_dataset=data)
    finally:
        lock.release()
    message = str(error.value)
    assert message.startswith("WORLD_SIZE=2: the launcher started 2 processes, but this one (RANK=1) runs alone")
    assert "`ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 examples/train_captioner.py ...`" \
        in message
