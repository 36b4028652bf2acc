"""Stage 6, CLIP filter: keep a sentence only if CLIP finds it consistent with its box's crop.

CLIPScore (Hessel et al., 2021) = 2.5 × max(cos, 0), with cos the cosine similarity of CLIP's
image embedding of the referent's box crop and its text embedding of the sentence. The paper
keeps sentences with CLIPScore > 0.5, i.e. cos > 0.2, with CLIP ViT-B/32. ``scores.clip`` holds
the raw cosine of the referent's first kept sentence and ``scores.clip_score`` its CLIPScore (both
stored in the dataset); a referent with no sentence left is rejected, and an image
with no referent left is rejected.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..backends import LazyModel
from ..options import StageOptions, resolve_device, resolve_dtype
from ..records import ImageRecord, without_referents
from .base import Reject, StageOutput

CLIP_MODEL_ID = "openai/clip-vit-base-patch32"
CLIP_SCORE_WEIGHT = 2.5
PAPER_CLIP_SCORE_THRESHOLD = 0.5
CLIP_SCORE_DEFINITION = (
    "CLIPScore = 2.5 × max(cos, 0) (Hessel et al., 2021, \"CLIPScore: A Reference-free Evaluation Metric for Image "
    "Captioning\"), where cos is the cosine similarity between CLIP's embedding of the crop of the referent's box and "
    "its embedding of the sentence. A sentence is kept when CLIPScore > {threshold} (the paper's 0.5 is cos > 0.2). "
    "`scores.clip` stores the raw cosine of the referent's first sentence; model: {model}."
)


def clip_score(cosine: float | np.ndarray) -> float | np.ndarray:
    """CLIPScore of a cosine similarity: ``2.5 * max(cos, 0)``."""
    return CLIP_SCORE_WEIGHT * np.maximum(cosine, 0.0)


def box_crop(image, bbox):
    """The crop of an ``[x, y, w, h]`` box (integer pixel bounds covering the box, at least 1 pixel)."""
    x, y, w, h = bbox
    x0, y0 = int(np.floor(max(x, 0))), int(np.floor(max(y, 0)))
    x1, y1 = int(np.ceil(min(x + w, image.width))), int(np.ceil(min(y + h, image.height)))
    return image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))


class ClipFilter:
    """Score each sentence against its box crop with CLIP; keep those with CLIPScore > ``min_score``.

    Args:
        model, processor: a loaded ``CLIPModel`` and processor (tests pass tiny ones); or None to
            load ``model_id`` on first use.
        min_score: the CLIPScore threshold (strictly greater is kept).
        batch_size: crops (and sentences) embedded together.
    """

    name = "clip_filter"

    def __init__(self, model=None, processor=None, model_id: str = CLIP_MODEL_ID, device: str = "cpu", dtype=None,
                 min_score: float = PAPER_CLIP_SCORE_THRESHOLD, batch_size: int = 64):
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        self.min_score = min_score
        self.batch_size = batch_size
        self.clip = LazyModel.from_pretrained("CLIPModel", "CLIPProcessor", model_id, device=device, model=model,
                                              processor=processor, dtype=dtype)

    @classmethod
    def from_options(cls, options: StageOptions) -> "ClipFilter":
        device = resolve_device(options.device)
        return cls(model_id=options.clip_model, device=device, dtype=resolve_dtype(options.dtype, device),
                   min_score=options.clip_min_score, batch_size=options.clip_batch_size)

    @property
    def definition(self) -> str:
        """The filter in words, with its model and threshold (for the dataset card)."""
        return CLIP_SCORE_DEFINITION.format(threshold=self.min_score, model=self.model_id)

    @torch.no_grad()
    def cosines(self, crops, texts: list[str]) -> np.ndarray:
        """Cosine similarity of each crop with the text at the same index."""
        model, processor = self.clip.get()
        result = []
        for start in range(0, len(crops), self.batch_size):
            images = processor(images=crops[start : start + self.batch_size], return_tensors="pt")["pixel_values"]
            text = processor(text=texts[start : start + self.batch_size], padding=True, truncation=True, return_tensors="pt")
            image_embeds = model.get_image_features(pixel_values=images.to(self.device, model.dtype))
            text_embeds = model.get_text_features(**{k: v.to(self.device) for k, v in text.items()})
            image_embeds = getattr(image_embeds, "pooler_output", image_embeds)
            text_embeds = getattr(text_embeds, "pooler_output", text_embeds)
            cos = torch.nn.functional.cosine_similarity(image_embeds.float(), text_embeds.float(), dim=-1)
            result.append(cos.cpu().numpy())
        return np.concatenate(result) if result else np.zeros(0, np.float32)

    def __call__(self, records: list[ImageRecord]) -> StageOutput:
        crops, texts, owners = [], [], []
        for index, record in enumerate(records):
            for referent in record.referents:
                crop = box_crop(record.image, referent["bbox"])
                for sentence in referent["sentences"]:
                    crops.append(crop)
                    texts.append(sentence)
                    owners.append((index, referent["referent_id"]))
        cosines = self.cosines(crops, texts) if texts else np.zeros(0)
        scored: dict[tuple[int, str], list[tuple[str, float]]] = {}
        for owner, text, cos in zip(owners, texts, cosines.tolist()):
            scored.setdefault(owner, []).append((text, cos))
        out = StageOutput()
        for index, record in enumerate(records):
            removed, referents = set(), []
            for referent in record.referents:
                sentences = scored.get((index, referent["referent_id"]), [])
                kept = [(t, c) for t, c in sentences if clip_score(c) > self.min_score]
                for text, cos in sentences:
                    if kept and (text, cos) not in kept:
                        out.rejects.append(Reject(record.image_id, self.name, f"sentence dropped (referent kept): CLIPScore "
                                                  f"{clip_score(cos):.3f} <= {self.min_score}: {text[:60]!r}", referent["referent_id"],
                                                  level="sentence"))
                if not kept:
                    best = max((c for _, c in sentences), default=float("nan"))
                    reason = (f"CLIPScore {clip_score(best):.3f} <= {self.min_score}" if sentences else "no sentence to score")
                    out.rejects.append(Reject(record.image_id, self.name, reason, referent["referent_id"]))
                    removed.add(referent["referent_id"])
                    continue
                scores = {**(referent.get("scores") or {}), "clip": kept[0][1], "clip_score": float(clip_score(kept[0][1]))}
                referents.append({**referent, "sentences": [t for t, _ in kept], "scores": scores})
            record = without_referents(replace(record, referents=referents), removed)  # unlinks parts of removed objects
            if not record.referents:
                out.rejects.append(Reject(record.image_id, self.name, "no referent left"))
                continue
            out.records.append(record)
        return out
