"""Encode an image once, then answer any number of expressions on it from that encoding, as SAM's predictor does.

`Segmenter` holds the model and processor (one per app, shared by every visitor). `SessionState` is a visitor's
own: the encoded image (its pixel values and image embeddings) and the mask logits of each expression already
asked on it. A new set of expressions on the same image runs only the text tower and the decoder, and only for the
expressions not asked before; a new threshold runs no model at all (the masks come from the cached logits).

Every step is the one inference path of the pipeline and the evaluator (processor -> model -> `post_process_masks`),
split at the model's `image_embeddings`: the same image and expressions give the same masks and scores there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch
from PIL import Image


@dataclass
class EncodedImage:
    """One image as the model saw it: `pixel_values` `(1, 3, S, S)` and `embeddings` `(1, tokens, hidden)`."""

    image: Image.Image
    fingerprint: str
    pixel_values: torch.Tensor
    embeddings: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image the masks are made at."""
        return (self.image.height, self.image.width)


class Segmenter:
    """A UniRES model and its processor, split into the image side (`encode`) and the text side (`decode`)."""

    def __init__(self, model, processor, device=None):
        from modeling_unires import enable_fast_inference
        from modeling_unires.image_processing_unires_fast import use_fast_image_processor

        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(device).eval()
        if device.type == "cpu":  # as the pipeline: the inference-only layers and post-processing, same masks
            self.model = enable_fast_inference(self.model)
            processor = use_fast_image_processor(processor)
        self.processor = processor
        self.device = device

    @classmethod
    def from_pretrained(cls, name_or_path, device=None, quantization_config=None, **kwargs) -> "Segmenter":
        """Load model and processor from a folder or a Hub id (`kwargs` go to both `from_pretrained` calls,
        `quantization_config`, e.g. int8 on the CPU, to the model's only).

        A missing local folder fails as "No model folder or file at ..." (`FileNotFoundError`), not as a Hub
        connection error."""
        from run_support.sources import check_local_or_hub

        name_or_path = check_local_or_hub(name_or_path, kind="model")
        import modeling_unires  # noqa: F401  (registers UniRES with the Auto classes)
        from transformers import AutoModel, AutoProcessor

        from ..evaluation.segmenters.unires import adapter_config_file, load_unires_model

        if adapter_config_file(name_or_path) is not None:  # a LoRA adapter (examples/train.py --finetune lora)
            if quantization_config is not None:
                raise ValueError(f"{name_or_path} is a LoRA adapter: int8 loads a saved model; merge the adapter "
                                 "first (PeftModel.from_pretrained(...).merge_and_unload().save_pretrained(folder)) "
                                 "and quantize that folder")
            model, processor = load_unires_model(name_or_path, trust_remote_code=kwargs.get("trust_remote_code", False))
            return cls(model, processor, device=device)
        quantization = {} if quantization_config is None else {"quantization_config": quantization_config}
        model = AutoModel.from_pretrained(name_or_path, **kwargs, **quantization)
        processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
        return cls(model, processor, device=device)

    @property
    def default_threshold(self) -> float:
        """The model's mask threshold (`config.mask_threshold`), the slider's starting value."""
        return float(self.model.config.mask_threshold)

    @torch.inference_mode()
    def encode(self, image: Image.Image, fingerprint: str) -> EncodedImage:
        """Run the image side once: the processor (resize, normalise), then the vision tower with its group tokens."""
        inputs = self.processor(images=image, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, dtype=self.model.dtype)
        embeddings = self.model.get_image_embeddings(pixel_values)
        return EncodedImage(image=image, fingerprint=fingerprint, pixel_values=pixel_values, embeddings=embeddings)

    @torch.inference_mode()
    def decode(self, encoded: EncodedImage, expressions: list[str]) -> torch.Tensor:
        """Mask logits `(len(expressions), S, S)` (float32, on the CPU) from the text side and the decoder alone:
        the model's forward on the processor's text inputs, with the image embeddings of `encode` in place of the
        pixels (the image is not encoded again)."""
        inputs = self.processor(text=[list(expressions)], return_tensors="pt")  # one list: the one encoded image
        outputs = self.model(
            image_embeddings=encoded.embeddings,
            pixel_values=encoded.pixel_values,  # read by the pixel branch only, when the model has one
            **{name: value.to(self.device) for name, value in inputs.items()},
        )
        return outputs.logits.float().cpu()

    def masks(self, logits: torch.Tensor, size: tuple[int, int], threshold: float, texts=None):
        """`(masks, scores)` at `size` = (height, width) through the processor's one logits-to-mask path; NaN logits
        raise naming `texts` (the expressions of the logits)."""
        return self.processor.post_process_masks(logits, [size], threshold=threshold, return_scores=True, texts=texts)


@dataclass
class SessionState:
    """A visitor's image encoding and the logits of the expressions asked on it (kept in Gradio's session state)."""

    encoded: Optional[EncodedImage] = None
    logits: dict[str, torch.Tensor] = field(default_factory=dict)  # expression -> (S, S) logits on `encoded`
    expressions: list[str] = field(default_factory=list)  # the last set asked, in order (what the page shows)
    encode_seconds: float = 0.0  # what encoding `encoded` took, shown again when a later request reuses it
    notice: str = ""  # what the page must keep saying about `encoded` (e.g. that it was downscaled)

    def has_image(self, fingerprint: str) -> bool:
        return self.encoded is not None and self.encoded.fingerprint == fingerprint

    def set_image(self, segmenter: Segmenter, image: Image.Image, fingerprint: str, notice: str = "") -> bool:
        """Encode `image` unless it is the one already encoded; returns whether the image side ran. `notice` (e.g.
        "downscaled to ...") stays with the encoded image and is shown with every result on it."""
        if self.has_image(fingerprint):
            return False
        start = time.perf_counter()
        self.encoded = segmenter.encode(image, fingerprint)
        self.encode_seconds = time.perf_counter() - start
        self.logits = {}
        self.expressions = []
        self.notice = notice or ""
        return True

    def clear(self) -> None:
        self.encoded = None
        self.logits = {}
        self.expressions = []
        self.encode_seconds = 0.0
        self.notice = ""

    def ask(self, segmenter: Segmenter, expressions: list[str]) -> int:
        """Make `expressions` the current set, decoding those not asked before; returns how many were decoded."""
        if self.encoded is None:
            raise ValueError("no image is encoded: call set_image first")
        new = list(dict.fromkeys(expression for expression in expressions if expression not in self.logits))
        if new:
            for expression, logits in zip(new, segmenter.decode(self.encoded, new)):
                self.logits[expression] = logits
        self.expressions = list(expressions)
        # Only the current set is kept: the cache stays as small as one request, and an edit reuses the rest.
        self.logits = {expression: self.logits[expression] for expression in self.expressions}
        return len(new)

    def current_logits(self) -> torch.Tensor:
        """Logits `(n, S, S)` of the current expressions, in order: all a new threshold needs."""
        return torch.stack([self.logits[expression] for expression in self.expressions])
