"""transformers' `CLIPSegForImageSegmentation` (e.g. `CIDAS/clipseg-rd64-refined`) as a [`Segmenter`].

CLIPSeg answers one (image, expression) pair per row: its forward runs the vision tower on every row, so an image is
encoded once per expression (the model offers no way to share it). Pairs of several images are batched together
(`batch_size` pairs per forward); each image is preprocessed once. The logits (at the model's input size, 352x352 for
the released checkpoints) are resized bilinearly to the compared size, then `sigmoid > threshold`. The default
threshold is 0.35, the MRES convention (CRIS, UniRES), so that CLIPSeg and UniRES are thresholded alike; CLIPSeg's
authors binarise at other values, and `threshold=` changes it (stated in the result).
"""

from __future__ import annotations

from typing import Optional

import torch

from .base import Segmenter, chunks, default_device, resize_probabilities, rgb

DEFAULT_CLIPSEG_THRESHOLD = 0.35


class CLIPSegSegmenter(Segmenter):
    model_type = "clipseg"
    shares_image_encoding = False

    def __init__(self, model, processor, threshold: Optional[float] = None, batch_size: int = 32):
        self.model = model
        self.processor = processor
        self.threshold = float(DEFAULT_CLIPSEG_THRESHOLD if threshold is None else threshold)
        self.input_size = int(model.config.vision_config.image_size)
        self.batch_size = int(batch_size)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: Optional[str] = None, threshold: Optional[float] = None,
                        batch_size: int = 32):
        from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

        model = CLIPSegForImageSegmentation.from_pretrained(name_or_path)
        processor = CLIPSegProcessor.from_pretrained(name_or_path)
        return cls(model.to(device or default_device()).eval(), processor, threshold=threshold, batch_size=batch_size)

    @torch.no_grad()
    def segment(self, images, expressions, sizes=None):
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        pixel_values = self.processor.image_processor(images=[rgb(image) for image in images],
                                                      return_tensors="pt")["pixel_values"]
        pairs = [(index, text) for index, texts in enumerate(expressions) for text in texts]
        probabilities = []
        for chunk in chunks(pairs, self.batch_size):
            text_inputs = self.processor.tokenizer([text for _, text in chunk], padding=True, truncation=True,
                                                   return_tensors="pt")
            rows = torch.tensor([index for index, _ in chunk])
            logits = self.model(pixel_values=pixel_values[rows].to(device, dtype),
                                input_ids=text_inputs["input_ids"].to(device),
                                attention_mask=text_inputs["attention_mask"].to(device)).logits
            logits = logits.reshape(len(chunk), *logits.shape[-2:]).float()  # one pair gives (h, w): keep the row
            for (index, _), pair_logits in zip(chunk, logits):
                probabilities.append(resize_probabilities(pair_logits[None], sizes[index])[0].sigmoid().cpu())
        out, cursor = [], 0
        for texts in expressions:
            out.append(probabilities[cursor : cursor + len(texts)])
            cursor += len(texts)
        return out

    def conventions(self) -> dict:
        return {**super().conventions(), "model_class": type(self.model).__name__,
                "resizing": f"logits at {self.input_size}x{self.input_size} resized bilinearly to the compared size, "
                            "then sigmoid > threshold",
                "pairs_per_forward": self.batch_size}
