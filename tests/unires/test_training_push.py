"""The last line of defence of every push (run_support.hub.push_folder): no file that would be uploaded may
hold the token the upload uses (issue 27, case 1)."""

import huggingface_hub
import pytest

import run_support.hub as hub
from run_support.hub import HubPushError, files_to_upload, push_folder
from unires.training.hub import PUSH_IGNORE_PATTERNS

TOKEN = "hf_SECRETabcdefghijklmnopqrstuvwxyz0123"


@pytest.fixture
def uploads(monkeypatch):
    """`HfApi.upload_folder` faked: records each call's folder and patterns instead of uploading."""
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", lambda self, **kwargs: calls.append(kwargs))
    return calls


def _model_folder(root):
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 4096)  # 1 MiB: more than one read of the scan
    (root / "config.json").write_text('{"model_type": "unires"}')
    (root / "runs" / "unires" / "1").mkdir(parents=True)
    (root / "checkpoint-2").mkdir()
    return root


def test_a_file_holding_the_token_stops_the_upload_naming_it(tmp_path, uploads, monkeypatch):
    folder = _model_folder(tmp_path)
    (folder / "README.md").write_text(f"---\nlicense: mit\n---\ntrained with --hub_token {TOKEN}\n")
    with pytest.raises(HubPushError, match=r"README.md contains the Hub token"):
        push_folder(folder, "org/m", token=TOKEN, commit_message="m", ignore_patterns=PUSH_IGNORE_PATTERNS)
    assert uploads == []

    # Across the boundary of two reads, too.
    monkeypatch.setattr(hub, "_CHUNK", 16)
    (folder / "README.md").write_text("x" * 10 + TOKEN)
    with pytest.raises(HubPushError, match=r"README.md contains the Hub token"):
        push_folder(folder, "org/m", token=TOKEN, commit_message="m", ignore_patterns=PUSH_IGNORE_PATTERNS)
    assert uploads == []


def test_the_token_in_a_file_that_is_not_uploaded_does_not_stop_it(tmp_path, uploads):
    folder = _model_folder(tmp_path)
    (folder / "runs" / "unires" / "1" / "hparams.yml").write_text(f"hub_token: {TOKEN}\n")
    (folder / "checkpoint-2" / "trainer_state.json").write_text(TOKEN)
    push_folder(folder, "org/m", token=TOKEN, commit_message="m", ignore_patterns=PUSH_IGNORE_PATTERNS)
    assert len(uploads) == 1 and uploads[0]["ignore_patterns"] == PUSH_IGNORE_PATTERNS
    assert files_to_upload(folder, ignore_patterns=PUSH_IGNORE_PATTERNS) == ["config.json", "model.safetensors"]
    # An allow list narrows it as upload_folder's does.
    (folder / "notes.txt").write_text(TOKEN)
    push_folder(folder, "org/m", token=TOKEN, commit_message="m", allow_patterns=["*.json", "*.safetensors"],
                ignore_patterns=PUSH_IGNORE_PATTERNS)
    assert len(uploads) == 2


def test_the_saved_login_is_looked_for_when_no_token_is_given(tmp_path, uploads, monkeypatch):
    folder = _model_folder(tmp_path)
    (folder / "config.json").write_text(f'{{"token": "{TOKEN}"}}')
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: TOKEN)
    with pytest.raises(HubPushError, match="config.json contains the Hub token"):
        push_folder(folder, "org/m", commit_message="m")
    # A string too short to be a token is not looked for: it could be any 4 bytes of the weights.
    push_folder(folder, "org/m", token="\x00\x01\x02\x03", commit_message="m")
    assert len(uploads) == 1
