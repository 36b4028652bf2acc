"""Pushing to the Hub, one way for every push of the project: datasets, models and adapters.

Every script spells it as transformers' `Trainer` does: `--push_to_hub` (a switch), `--hub_model_id` (or
`--hub_dataset_id` for a dataset), `--hub_token` (by default the saved login) and `--hub_private_repo`. And every
script checks, before any work, what can fail without doing the work: the Hub is not switched off
(`HF_HUB_OFFLINE`), the token logs in (`whoami`) and may write, the repo exists or can be created. A run that
cannot push fails in seconds, not after days of training or building.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

logger = logging.getLogger(__name__)


# Argument names whose values are credentials: kept out of trackers, logs, model cards and anything uploaded.
SECRET_ARGUMENT = re.compile(r"token|secret|password|passwd|api_?key|credential", re.IGNORECASE)

# Where a run's tracker logs (TensorBoard, ...) go inside its output folder; never uploaded.
TRACKER_LOG_DIR = "runs"


def without_secrets(values: Mapping[str, Any]) -> dict:
    """``values`` less every entry whose name says it holds a credential (``hub_token``, ``api_key``, ...).

    What a run hands to `Accelerator.init_trackers` (which writes it to ``hparams.yml``) or writes into a card goes
    through this first: a token passed on the command line must not end up in a file that a push uploads.
    """
    return {key: value for key, value in values.items() if not SECRET_ARGUMENT.search(str(key))}


class HubPushError(RuntimeError):
    """`--push_to_hub` cannot succeed: raised before the work starts, saying what to do about it."""


def check_push_access(
    repo_id: Optional[str],
    output_dir: Optional[str],
    *,
    token: Optional[str] = None,
    private: bool = False,
    repo_type: str = "model",
    option: str = "--hub_model_id",
) -> str:
    """The repo id a push will go to, after checking that the push can succeed; raises `HubPushError` if not.

    ``repo_id`` is ``org/name`` as given, or a bare name (or nothing: ``output_dir``'s folder name) that goes under
    the token's user, as transformers' `Trainer` resolves it. Checks, in order: the Hub is not switched off, the
    token logs in, it is not read-only, the repo exists or is created (as `Trainer` creates it at start), and the
    token may write to it. ``option`` is the command-line option that names the repo, quoted in the messages.
    """
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise HubPushError(
            "--push_to_hub was given but the Hub is switched off (HF_HUB_OFFLINE=1 or TRANSFORMERS_OFFLINE=1): "
            "unset it to push, or drop --push_to_hub and upload later with "
            f"`hf upload {repo_id or '<repo id>'} {output_dir or '<folder>'}{' --repo-type dataset' if repo_type == 'dataset' else ''}`."
        )
    api = HfApi(token=token)
    try:
        user = api.whoami()
    except Exception as error:  # no token, a bad token, or no connection: all mean "cannot push"
        raise HubPushError(
            f"--push_to_hub: cannot log in to the Hub ({type(error).__name__}: {error}). Log in with "
            "`hf auth login`, or pass --hub_token (a token with write access)."
        ) from error
    if ((user.get("auth") or {}).get("accessToken") or {}).get("role") == "read":
        raise HubPushError(
            f"--push_to_hub: the token of {user.get('name')!r} is read-only; pass --hub_token with a write token."
        )
    repo_id = resolve_repo_id(repo_id, output_dir, user.get("name"), option=option)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.auth_check(repo_id, repo_type=repo_type, write=True)
    except Exception as error:
        raise HubPushError(
            f"--push_to_hub: {user.get('name')!r} cannot write to the Hub repo {repo_id!r} "
            f"({type(error).__name__}: {error}). Choose a repo you own with {option}, or a token with write "
            "access to it with --hub_token."
        ) from error
    logger.info("push checked: the %s will be uploaded to %s", repo_type, repo_url(repo_id, repo_type))
    return repo_id


def resolve_repo_id(repo_id: Optional[str], output_dir: Optional[str], user: Optional[str], option: str = "--hub_model_id") -> str:
    """`org/name` as given; `name` or nothing (the output folder's name) goes under the user's namespace."""
    if not repo_id and not output_dir:
        raise HubPushError(f"--push_to_hub: no repo named; pass {option} as org/name.")
    name = repo_id or Path(output_dir).resolve().name
    if "/" in name:
        return name
    if not user:
        raise HubPushError(f"--push_to_hub: no namespace for {name!r}; pass {option} as org/name.")
    return f"{user}/{name}"


def repo_url(repo_id: str, repo_type: str = "model") -> str:
    return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"


def push_folder(
    folder,
    repo_id: str,
    *,
    token: Optional[str] = None,
    repo_type: str = "model",
    commit_message: str,
    ignore_patterns: Optional[Sequence[str]] = None,
    allow_patterns: Optional[Sequence[str]] = None,
    delete_patterns: Optional[Sequence[str]] = None,
) -> str:
    """Upload ``folder`` to ``repo_id`` in one commit; returns the repo's URL. The repo exists already:
    :func:`check_push_access` created it before the work began.

    Last line of defence against a leaked credential: nothing is uploaded if any file that would be contains the
    token the upload uses (``token``, or the saved login); the error names the file.
    """
    from huggingface_hub import HfApi

    check_no_token_in_upload(folder, token, ignore_patterns=ignore_patterns, allow_patterns=allow_patterns)
    HfApi(token=token).upload_folder(
        repo_id=repo_id,
        repo_type=repo_type,
        folder_path=str(folder),
        ignore_patterns=list(ignore_patterns) if ignore_patterns else None,
        allow_patterns=list(allow_patterns) if allow_patterns else None,
        delete_patterns=list(delete_patterns) if delete_patterns else None,
        commit_message=commit_message,
    )
    return repo_url(repo_id, repo_type)


def files_to_upload(folder, *, ignore_patterns: Optional[Sequence[str]] = None,
                    allow_patterns: Optional[Sequence[str]] = None) -> list[str]:
    """The files (paths relative to ``folder``, ``/``-separated) that `HfApi.upload_folder` would upload with these
    patterns: its own selection (`filter_repo_objects`, plus the ``.git`` and cache folders it always skips)."""
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    root = Path(folder).expanduser().resolve()
    files = sorted(path.relative_to(root).as_posix() for path in root.glob("**/*") if path.is_file())
    ignored = [*(ignore_patterns or ()), *DEFAULT_IGNORE_PATTERNS]
    return list(filter_repo_objects(files, allow_patterns=list(allow_patterns) if allow_patterns else None,
                                    ignore_patterns=ignored))


# Shorter strings are not Hub tokens (those are "hf_" and 34 characters) and could match weights' bytes by chance.
_MIN_TOKEN_LENGTH = 8
_CHUNK = 1 << 20


def check_no_token_in_upload(folder, token: Optional[str] = None, *, ignore_patterns: Optional[Sequence[str]] = None,
                             allow_patterns: Optional[Sequence[str]] = None) -> None:
    """Raise `HubPushError` naming the first file under ``folder`` that an upload would take and that holds
    ``token`` (default: the saved login's). Every such file is read once, weights included: the upload reads them
    all anyway, to hash them."""
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
    if not token or len(token) < _MIN_TOKEN_LENGTH:
        return
    secret = token.encode()
    root = Path(folder)
    for name in files_to_upload(root, ignore_patterns=ignore_patterns, allow_patterns=allow_patterns):
        if _file_contains(root / name, secret):
            raise HubPushError(
                f"refusing to upload {root.resolve()}: {name} contains the Hub token this push uses; remove it from "
                "that file (a token belongs in `hf auth login`, never in a file of the repo) and upload again."
            )


def _file_contains(path: Path, needle: bytes) -> bool:
    """Whether ``needle`` occurs in the file, read in chunks that overlap so that no occurrence is split."""
    tail = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            if needle in tail + chunk:
                return True
            tail = (tail + chunk)[-(len(needle) - 1):] if len(needle) > 1 else b""
    return False
