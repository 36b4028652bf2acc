"""Tell a local path from a Hub repo id before loading, so that a typo in a path reads as one.

``from_pretrained`` and ``load_dataset`` treat every name that is not an existing local folder as a Hub id:
a mistyped ``outputs/demo/modle`` then fails as "couldn't connect to the Hub" (offline) or "Couldn't reach
... on the Hub" (online), which sends the user to check their network rather than their spelling.
:func:`check_local_or_hub` says "No model folder at ..." instead, for any name that can only be a path.
"""

from __future__ import annotations

import os
import re

from huggingface_hub import constants

# A Hub repo id: "name" or "namespace/name" of letters, digits, "-", "_", "." (huggingface_hub's own rule).
_REPO_ID = re.compile(r"^(?:[\w\-.]{1,96}/)?[\w\-.]{1,96}$")


def looks_like_local_path(name: str) -> bool:
    """True when ``name`` cannot be a Hub repo id, or its parent folder exists here (``outputs/demo/modle``)."""
    if name.startswith(("/", "./", "../", "~", ".\\")) or name in (".", "..") or "\\" in name:
        return True
    if not _REPO_ID.match(name) or name.endswith((".json", ".safetensors", ".parquet", ".bin", ".pt")):
        return True
    parent = os.path.dirname(name.rstrip("/"))
    return bool(parent) and os.path.isdir(parent)


def check_local_or_hub(name: str | os.PathLike, kind: str = "model", hint: str = "") -> str:
    """Return ``name`` as a string if it is an existing local path or may be a Hub id; raise otherwise.

    Raises ``FileNotFoundError`` ("No model folder at X") for a missing path, and ``OSError`` when ``name``
    could only be a Hub id but the Hub is offline (``HF_HUB_OFFLINE=1``) and the repo is not in the local Hub
    cache, naming both readings. ``kind`` names
    the thing in the message ("model", "dataset", "image"); ``hint`` is appended (e.g. "run `make demo` first").
    """
    name = os.fspath(name)
    suffix = f" {hint}" if hint else ""
    if os.path.exists(os.path.expanduser(name)):
        return name
    if looks_like_local_path(name):
        raise FileNotFoundError(f"No {kind} folder or file at {name} (and it is not a Hub id).{suffix}")
    if constants.HF_HUB_OFFLINE and not in_hub_cache(name, kind):
        raise OSError(f"{name} is not a local {kind} folder, and the Hub is offline (HF_HUB_OFFLINE=1), so it cannot "
                      f"be read as a Hub id either. Check the path, or unset HF_HUB_OFFLINE to download it.{suffix}")
    return name


def in_hub_cache(name: str, kind: str = "model") -> bool:
    """Whether the Hub cache holds a copy of repo ``name`` (what ``from_pretrained`` reads when offline)."""
    repo_type = "datasets" if kind == "dataset" else "models"
    return os.path.isdir(os.path.join(constants.HF_HUB_CACHE, f"{repo_type}--{name.replace('/', '--')}"))


# The data engine's layout (mres_engine.layout, which this package may not import; a test keeps the names equal):
# a run writes manifest/manifest.json first and stats.json last, when every shard is complete.
ENGINE_MANIFEST = os.path.join("manifest", "manifest.json")
ENGINE_STATS = "stats.json"


def unfinished_engine_run(folder: str | os.PathLike) -> bool:
    """True for a data-engine output folder whose run has not finished: shards may still be appearing, so a
    number measured on it would be measured on part of the data."""
    folder = os.path.expanduser(os.fspath(folder))
    return os.path.isfile(os.path.join(folder, ENGINE_MANIFEST)) and not os.path.isfile(
        os.path.join(folder, ENGINE_STATS))
