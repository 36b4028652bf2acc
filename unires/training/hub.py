"""Pushing a trained model to the Hub: checked before the first step, uploaded after the last.

The spelling is transformers' `Trainer`'s: `--push_to_hub` (a switch), `--hub_model_id` (the repo; by default
the name of `--output_dir` under the token's user, as transformers does), `--hub_token` (by default the saved
login) and `--hub_private_repo`. Everything that can fail without training is tried before training starts:
offline mode, the login (`whoami`), the repo's creation and write access; a run that cannot push fails in
seconds, not after days.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

logger = logging.getLogger(__name__)

# Never uploaded: resumable checkpoints, the data trace, tracker logs and the run's lock.
PUSH_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/*", "data_trace/*", "runs/*", ".lock"]


class HubPushError(RuntimeError):
    """`--push_to_hub` cannot succeed: raised before training, with what to do about it."""


def check_push_access(
    hub_model_id: Optional[str], output_dir: str, *, token: Optional[str] = None, private: bool = False
) -> str:
    """The repo id a push will go to, after checking that the push can succeed; raises `HubPushError` if not.

    Checks, in order: the Hub is not switched off (`HF_HUB_OFFLINE`), the token logs in (`whoami`), the repo exists
    or can be created, and the token may write to it. Creates the repo (as transformers' `Trainer` does at start).
    """
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise HubPushError(
            "--push_to_hub was given but the Hub is switched off (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1): "
            "unset it to push, or drop --push_to_hub and upload later with "
            f"`hf upload {hub_model_id or '<repo id>'} {output_dir}`."
        )
    api = HfApi(token=token)
    try:
        user = api.whoami()
    except Exception as error:  # no token, a bad token, or no connection: all mean "cannot push"
        raise HubPushError(
            f"--push_to_hub: cannot log in to the Hub ({type(error).__name__}: {error}). Log in with "
            "`hf auth login`, or pass --hub_token (a token with write access)."
        ) from error
    role = ((user.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubPushError(
            f"--push_to_hub: the token of {user.get('name')!r} is read-only; pass --hub_token with a write token."
        )
    repo_id = resolve_repo_id(hub_model_id, output_dir, user.get("name"))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        api.auth_check(repo_id, write=True)
    except Exception as error:
        raise HubPushError(
            f"--push_to_hub: {user.get('name')!r} cannot write to the Hub repo {repo_id!r} "
            f"({type(error).__name__}: {error}). Choose a repo you own with --hub_model_id, or a token with write "
            "access to it with --hub_token."
        ) from error
    logger.info("push checked: the model will be uploaded to https://huggingface.co/%s", repo_id)
    return repo_id


def resolve_repo_id(hub_model_id: Optional[str], output_dir: str, user: Optional[str]) -> str:
    """`org/name` as given; `name` or nothing (the output folder's name) goes under the user's namespace."""
    name = hub_model_id or Path(output_dir).resolve().name
    if "/" in name:
        return name
    if not user:
        raise HubPushError(f"--push_to_hub: no namespace for {name!r}; pass --hub_model_id as org/name.")
    return f"{user}/{name}"


def push_folder(folder, repo_id: str, *, token: Optional[str] = None, commit_message: str) -> str:
    """Upload the saved model folder (not its checkpoints, traces or tracker logs); returns the repo's URL."""
    from huggingface_hub import HfApi

    HfApi(token=token).upload_folder(
        repo_id=repo_id, folder_path=str(folder), ignore_patterns=PUSH_IGNORE_PATTERNS, commit_message=commit_message
    )
    return f"https://huggingface.co/{repo_id}"
