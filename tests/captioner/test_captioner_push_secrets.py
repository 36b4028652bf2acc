"""Issue 27 item 1: a --hub_token given on the command line reaches no tracker, log line, model card or upload."""
import logging
from pathlib import Path

import datasets
import pytest

from captioner.finetune_data import CAPTION_FEATURES
from captioner.train import CaptionerDataArguments, CaptionerModelArguments, CaptionerTrainingArguments, train
from run_support.hub import TRACKER_LOG_DIR

TOKEN = "hf_SECRETtoken123"


@pytest.fixture
def fake_hub(monkeypatch):
    """A Hub that accepts the token and records, for each push, the files `upload_folder` would send: every file
    under ``folder_path`` that passes the push's own allow/ignore patterns, as huggingface_hub filters them."""
    import huggingface_hub
    import huggingface_hub.constants
    from huggingface_hub.utils import filter_repo_objects

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "whoami",
                        lambda self, *a, **k: {"name": "alice", "auth": {"accessToken": {"role": "write"}}})
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "auth_check", lambda self, repo_id, **kwargs: None)
    uploads = []

    def upload_folder(self, *, folder_path, allow_patterns=None, ignore_patterns=None, **kwargs):
        folder = Path(folder_path)
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        uploads.append((folder, list(filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))))

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return uploads


def _holding_token(folder: Path, names) -> list:
    return [name for name in names if TOKEN.encode() in (folder / name).read_bytes()]


def test_the_hub_token_reaches_no_tracker_log_card_or_upload(base_dir, rows, tmp_path, fake_hub, caplog, capsys):
    out = tmp_path / "out"
    earlier = out / "captioner" / "1796606208.17" / "hparams.yml"  # where an earlier version's tracker wrote it
    earlier.parent.mkdir(parents=True)
    earlier.write_text(f"hub_token: {TOKEN}\n")
    args = CaptionerTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=4, gradient_accumulation_steps=1, learning_rate=1e-2,
        max_steps=2, warmup_ratio=0.0, lr_scheduler_type="constant", logging_steps=1, save_steps=1, seed=0,
        report_to="tensorboard", push_to_hub=True, hub_model_id="alice/captioner", hub_token=TOKEN)
    with caplog.at_level(logging.DEBUG):
        train(CaptionerModelArguments(base_model=base_dir, lora_r=4, lora_alpha=8, lora_dropout=0.0),
              CaptionerDataArguments(), args, train_dataset=datasets.Dataset.from_list(rows, features=CAPTION_FEATURES))

    (folder, uploaded), = fake_hub
    assert folder == out and {"adapter_model.safetensors", "adapter_config.json", "README.md"} <= set(uploaded)
    assert _holding_token(out, uploaded) == []
    assert not [name for name in uploaded if name.startswith((f"{TRACKER_LOG_DIR}/", "checkpoint-"))], uploaded
    # The tracker's logs are kept, under runs/ (never uploaded), with every argument but the credential.
    every_file = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    tracker_files = [name for name in every_file if name.startswith(f"{TRACKER_LOG_DIR}/")]
    hparams = [name for name in tracker_files if name.endswith("hparams.yml")]
    assert hparams and any("events.out.tfevents" in name for name in tracker_files), every_file
    logged_arguments = (out / hparams[0]).read_text().splitlines()
    assert "learning_rate: 0.01" in logged_arguments and not [line for line in logged_arguments if line.startswith("hub_token:")]
    assert _holding_token(out, every_file) == ["captioner/1796606208.17/hparams.yml"]  # none the run wrote, uploaded or not
    assert TOKEN not in caplog.text and TOKEN not in "".join(capsys.readouterr())
