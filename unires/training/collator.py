"""The training collator: MRES image rows → a UniRES batch of K expressions per image encoding.

Rows follow the MRES schema (one row per image with a list of referents; see
`dataset_scripts/features.py`). A training batch samples K referents per image and one
sentence per referent, so the K expressions share one image encoding in the model
(`image_indices`). Sampling is a pure function of (seed, epoch, image_id), which makes a
resumed run see exactly the data an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from typing import Any, Optional

import numpy as np

from dataset_scripts.features import GRANULARITIES, sentences_of
from dataset_scripts.masks import decode_mask

logger = logging.getLogger(__name__)


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed that depends only on `parts` (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def drop_padding_columns(batch) -> None:
    """Cut `input_ids` / `attention_mask` (in place) after the last token any expression attends to.

    The processor pads every expression to `text_max_length`; the text tower is causal and every later use of the
    tokens masks padding, so the model's outputs are unchanged while the text side (the tower, the cross-attention
    keys) costs what the batch's longest expression needs, not the maximum length.
    """
    mask = batch["attention_mask"]
    attended = mask.any(0).nonzero()
    length = int(attended.max()) + 1 if len(attended) else mask.shape[1]
    if length < mask.shape[1]:
        batch["input_ids"] = batch["input_ids"][:, :length].contiguous()
        batch["attention_mask"] = mask[:, :length].contiguous()


class MRESTrainingCollator:
    """Turns MRES image rows into a UniRES training batch.

    For each image it samples up to `referents_per_image` referents (optionally of one
    granularity) and one sentence per referent. The output holds one `pixel_values` row per
    image and one text/label row per expression, with `image_indices` mapping the latter to
    the former, plus bookkeeping lists (`granularities`, `image_ids`) that the trainer pops.
    """

    def __init__(self, processor, referents_per_image: int = 4, granularity: Optional[str] = None, seed: int = 0):
        if referents_per_image < 1:
            raise ValueError(f"referents_per_image must be >= 1, got {referents_per_image}")
        if granularity is not None and granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES} or None, got {granularity!r}")
        self.processor = processor
        self.referents_per_image = referents_per_image
        self.granularity = granularity
        self.seed = seed
        self.epoch = 0
        self.skipped = Counter()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _eligible(self, row: dict) -> list[dict]:
        eligible = []
        for referent in row["referents"]:
            if self.granularity is not None and referent["granularity"] != self.granularity:
                continue
            if not sentences_of(referent):
                # Counted, not silent: a referent with no usable sentence cannot be trained on.
                self.skipped["no sentence"] += 1
                logger.debug("image %s referent %s has no sentence; skipped", row["image_id"], referent["referent_id"])
                continue
            eligible.append(referent)
        return eligible

    def sample(self, row: dict) -> list[tuple[dict, str]]:
        """The (referent, sentence) pairs this row contributes at the current epoch."""
        rng = np.random.default_rng(stable_seed(self.seed, self.epoch, row["image_id"]))
        eligible = self._eligible(row)
        k = min(self.referents_per_image, len(eligible))
        chosen = rng.choice(len(eligible), size=k, replace=False) if k else []
        pairs = []
        for index in sorted(int(i) for i in chosen):
            referent = eligible[index]
            sentences = sentences_of(referent)
            pairs.append((referent, sentences[int(rng.integers(len(sentences)))]))
        return pairs

    def __call__(self, rows: list[dict]) -> dict:
        images, texts, masks, granularities, image_ids = [], [], [], [], []
        for row in rows:
            pairs = self.sample(row)
            if not pairs:
                self.skipped["image without eligible referent"] += 1
                continue
            image = row["image"]
            images.append(image)
            image_ids.append(row["image_id"])
            image_texts, image_masks = [], []
            for referent, sentence in pairs:
                mask = decode_mask(referent["mask"])
                if mask.shape != (image.height, image.width):
                    raise ValueError(
                        f"image {row['image_id']} referent {referent['referent_id']}: mask size "
                        f"{mask.shape[::-1]} differs from the image size {image.size}"
                    )
                image_texts.append(sentence)
                image_masks.append(mask)
                granularities.append(referent["granularity"])
            texts.append(image_texts)
            masks.append(image_masks)
        if not texts:
            raise ValueError(f"no trainable referent in the batch of images {[r['image_id'] for r in rows]}")
        # The processor of the one inference path, given the masks: labels beside the model inputs.
        batch = self.processor(images=images, text=texts, masks=masks)
        batch.pop("original_sizes")  # training compares at the model's input size
        drop_padding_columns(batch)
        batch["granularities"] = granularities
        batch["image_ids"] = image_ids
        return batch
