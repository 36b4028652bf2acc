"""transformers' `Sam3Model` via `Sam3Processor` (e.g. `facebook/sam3`) as a [`Segmenter`].

The expression is SAM 3's text prompt. The vision tower runs once per image (`get_vision_features`) and its features
are indexed for every expression of that image (`forward(vision_embeds=...)`), so K expressions cost one image
encoding plus K prompt passes (DETR encoder/decoder, mask decoder); `batch_size` expressions go through together.

SAM 3 answers a noun phrase with every instance it finds: each query has a mask and a score,
`sigmoid(pred_logits) * sigmoid(presence_logits)` (as `post_process_instance_segmentation` computes it). A referring
expression names one referent, so the instances become one mask by a stated rule (`instance_rule`):

- `"best"` (default): the highest-scoring query's mask, whatever its score. Every expression of RefCOCO_m, the
  RefCOCO family and MRES-Synth has exactly one target, so SAM 3 is never allowed to answer "nothing".
- `"union"`: the union of the masks of every query scoring above `score_threshold` (default 0.5); empty when none.

Instance mask logits are resized bilinearly to the compared size and thresholded at `mask_threshold` (default 0.5,
SAM 3's post-processing default): `sigmoid > 0.5`. The union is the pixel-wise maximum of the kept instances'
probabilities, so it is exactly the union of their thresholded masks.
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import Segmenter, chunks, default_device, resize_probabilities, rgb

INSTANCE_RULES = ("best", "union")
DEFAULT_INSTANCE_RULE = "best"
DEFAULT_SCORE_THRESHOLD = 0.5
DEFAULT_SAM3_MASK_THRESHOLD = 0.5
SAM3_TEXT_LENGTH = 32  # Sam3Processor pads every prompt to 32 tokens


def merge_instances(scores: torch.Tensor, mask_logits: torch.Tensor, size, rule: str = DEFAULT_INSTANCE_RULE,
                    score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> torch.Tensor:
    """One `(h, w)` probability map at `size` from one expression's queries.

    Args:
        scores: `(num_queries,)` instance scores in [0, 1].
        mask_logits: `(num_queries, mh, mw)` instance mask logits.
        rule: `"best"` (the top-scoring query) or `"union"` (every query above `score_threshold`).
    """
    if rule not in INSTANCE_RULES:
        raise ValueError(f"instance_rule must be one of {INSTANCE_RULES}, got {rule!r}")
    if rule == "best":
        keep = scores.argmax()[None]
    else:
        keep = (scores > score_threshold).nonzero()[:, 0]
        if len(keep) == 0:
            return torch.zeros(tuple(size))
    return resize_probabilities(mask_logits[keep].float(), size).sigmoid().amax(0)


class Sam3Segmenter(Segmenter):
    model_type = "sam3"
    shares_image_encoding = True

    def __init__(self, model, processor, threshold: Optional[float] = None, instance_rule: str = DEFAULT_INSTANCE_RULE,
                 score_threshold: float = DEFAULT_SCORE_THRESHOLD, batch_size: int = 16, image_batch_size: int = 4):
        if instance_rule not in INSTANCE_RULES:
            raise ValueError(f"instance_rule must be one of {INSTANCE_RULES}, got {instance_rule!r}")
        self.model = model
        self.processor = processor
        self.threshold = float(DEFAULT_SAM3_MASK_THRESHOLD if threshold is None else threshold)
        self.instance_rule = instance_rule
        self.score_threshold = float(score_threshold)
        self.batch_size = int(batch_size)
        self.image_batch_size = int(image_batch_size)
        self.input_size = int(model.config.vision_config.backbone_config.image_size)
        self.text_length = min(SAM3_TEXT_LENGTH, int(model.config.text_config.max_position_embeddings))

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: Optional[str] = None, threshold: Optional[float] = None,
                        instance_rule: str = DEFAULT_INSTANCE_RULE, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                        batch_size: int = 16):
        from transformers import Sam3Model, Sam3Processor

        model = Sam3Model.from_pretrained(name_or_path)
        processor = Sam3Processor.from_pretrained(name_or_path)
        return cls(model.to(device or default_device()).eval(), processor, threshold=threshold,
                   instance_rule=instance_rule, score_threshold=score_threshold, batch_size=batch_size)

    @torch.no_grad()
    def segment(self, images, expressions, sizes=None):
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        out = []
        for start in range(0, len(images), self.image_batch_size):
            batch_images = images[start : start + self.image_batch_size]
            batch_texts = expressions[start : start + self.image_batch_size]
            batch_sizes = sizes[start : start + self.image_batch_size]
            pixel_values = self.processor.image_processor(images=[rgb(image) for image in batch_images],
                                                          return_tensors="pt")["pixel_values"]
            vision = self.model.get_vision_features(pixel_values=pixel_values.to(device, dtype))  # once per image
            pairs = [(index, text) for index, texts in enumerate(batch_texts) for text in texts]
            maps = []
            for chunk in chunks(pairs, self.batch_size):
                rows = torch.tensor([index for index, _ in chunk], device=device)
                text = self.processor.tokenizer([t for _, t in chunk], padding="max_length", truncation=True,
                                                max_length=self.text_length, return_tensors="pt")
                outputs = self.model(vision_embeds=_select(vision, rows), input_ids=text["input_ids"].to(device),
                                     attention_mask=text["attention_mask"].to(device))
                scores = outputs.pred_logits.float().sigmoid()
                if outputs.presence_logits is not None:
                    scores = scores * outputs.presence_logits.float().sigmoid()
                for row, (index, _) in enumerate(chunk):
                    maps.append(merge_instances(scores[row], outputs.pred_masks[row], batch_sizes[index],
                                                self.instance_rule, self.score_threshold).cpu())
            cursor = 0
            for texts in batch_texts:
                out.append(maps[cursor : cursor + len(texts)])
                cursor += len(texts)
        return out

    def conventions(self) -> dict:
        rule = ("the highest-scoring query's mask (never empty)" if self.instance_rule == "best" else
                f"union of the queries scoring > {self.score_threshold:g} (empty when none)")
        return {**super().conventions(), "model_class": type(self.model).__name__,
                "instance_rule": self.instance_rule, "instance_rule_text": rule,
                "score": "sigmoid(pred_logits) * sigmoid(presence_logits)",
                "score_threshold": self.score_threshold if self.instance_rule == "union" else None,
                "resizing": "instance mask logits resized bilinearly to the compared size, then sigmoid > threshold",
                "prompt": f"the expression as SAM 3's text prompt ({self.text_length} tokens at most)"}


def _select(vision, rows: torch.Tensor):
    """The vision features of `rows` (an image index per expression): one encoding indexed, not recomputed."""
    def pick(value):
        if isinstance(value, torch.Tensor):
            return value.index_select(0, rows)
        if isinstance(value, (tuple, list)):
            return type(value)(pick(item) for item in value)
        return value

    return type(vision)(**{key: pick(value) for key, value in vision.items()})
