"""Pushing a trained model to the Hub: checked before the first step, uploaded after the last.

The checks and the upload are :mod:`run_support.hub`'s, shared by every push of the project (the spelling is
transformers' `Trainer`'s: `--push_to_hub`, `--hub_model_id`, `--hub_token`, `--hub_private_repo`); what is
particular to a training run is what must never be uploaded.
"""

from __future__ import annotations

from typing import Optional

from run_support.hub import TRACKER_LOG_DIR, HubPushError, check_push_access, resolve_repo_id
from run_support.hub import push_folder as _push_folder

# Never uploaded: resumable checkpoints, the data trace, tracker logs and the run's lock. `unires/*` is where
# earlier versions wrote the tracker logs (Accelerate's default, the project folder itself), with every argument in
# hparams.yml: a run resumed in such a folder must not upload them.
PUSH_IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/*", "data_trace/*", f"{TRACKER_LOG_DIR}/*", "unires/*", ".lock"]


def push_folder(folder, repo_id: str, *, token: Optional[str] = None, commit_message: str) -> str:
    """Upload the saved model folder (not its checkpoints, traces, tracker logs or lock); returns the repo's URL."""
    return _push_folder(folder, repo_id, token=token, commit_message=commit_message, ignore_patterns=PUSH_IGNORE_PATTERNS)


__all__ = ["HubPushError", "PUSH_IGNORE_PATTERNS", "check_push_access", "push_folder", "resolve_repo_id"]
