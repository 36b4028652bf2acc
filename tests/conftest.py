"""Test-wide settings: never touch the network, keep CPU threads modest."""
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A private datasets cache per run: `load_dataset(folder)` caches by folder name and config,
# so a stale cache from another run's folder of the same name must never be read.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="unires-datasets-cache-")

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))
