"""Turning (image, box, granularity[, caption]) into model inputs: chat prompts and masked labels."""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .box_prompts import build_messages, build_prompt, normalize_box
from dataset_scripts.rejects import RejectLog

IGNORE_INDEX = -100


def load_image(image, item=None) -> Image.Image:
    """An RGB ``PIL.Image`` from a PIL image, a path, bytes, an array or a ``datasets`` image dict.

    Raises:
        ValueError: naming ``item`` (or the path) when the image cannot be read.
    """
    label = f"item {item!r}" if item is not None else "image"
    try:
        if isinstance(image, dict):  # datasets.Image(decode=False) form
            image = image.get("bytes") or image.get("path")
        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as opened:
                return opened.convert("RGB")
        if isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as opened:
                return opened.convert("RGB")
        if isinstance(image, np.ndarray):
            return Image.fromarray(image).convert("RGB")
        if isinstance(image, Image.Image):
            image.load()
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, TypeError) as error:
        raise ValueError(f"Cannot read the image of {label} ({image if isinstance(image, (str, os.PathLike)) else type(image).__name__}): {error}") from error
    raise ValueError(f"Cannot read the image of {label}: unsupported type {type(image).__name__}.")


def render_prompt(processor, granularity: str, normalized_box: Sequence[int], templates: dict | None = None) -> str:
    """The chat-formatted prompt text (with the generation prompt) for one box."""
    messages = build_messages(build_prompt(granularity, normalized_box, templates))
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def render_answer(processor, prompt_text: str, granularity: str, normalized_box: Sequence[int], caption: str, templates: dict | None = None) -> str:
    """The assistant turn that follows ``prompt_text`` in the chat template (caption + end of turn)."""
    messages = build_messages(build_prompt(granularity, normalized_box, templates), caption)
    full_text = processor.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("The chat template renders the prompt differently with and without the answer; cannot mask labels.")
    return full_text[len(prompt_text):].rstrip()


def context_length(model) -> int | None:
    """The language model's context size, when the config says it."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "max_position_embeddings", None)


class CaptionCollator:
    """Collate caption rows (``image``, ``bbox`` [x,y,w,h] pixels, ``granularity``, ``caption``) into a
    right-padded batch whose ``labels`` are -100 everywhere except on the answer tokens.

    A row whose image cannot be read, whose box is unusable, or whose encoding is longer than
    ``max_length`` is skipped and recorded in ``rejects``; a batch left empty collates to ``None``.
    """

    def __init__(self, processor, max_length: int | None = None, templates: dict | None = None, rejects: RejectLog | None = None):
        self.processor = processor
        self.max_length = max_length
        self.templates = templates
        self.rejects = rejects if rejects is not None else RejectLog(stage="caption_training")

    def _item(self, row: dict, index: int):
        return row.get("id") or f"{row.get('source', '')}:{row.get('image_id', index)}:{list(row.get('bbox', []))}"

    def _prepare(self, row: dict, index: int):
        item = self._item(row, index)
        image = load_image(row["image"], item)
        box = normalize_box(row["bbox"], image.size, item)
        prompt = render_prompt(self.processor, row["granularity"], box, self.templates)
        answer = render_answer(self.processor, prompt, row["granularity"], box, row["caption"], self.templates)
        return item, image, prompt, answer

    def __call__(self, rows: list[dict]):
        prepared = []
        for index, row in enumerate(rows):
            try:
                prepared.append(self._prepare(row, index))
            except ValueError as error:
                self.rejects.skip(self._item(row, index), f"bad item: {error}")
        while prepared:
            batch = self._encode(prepared)
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            too_long = [i for i, length in enumerate(lengths) if self.max_length and length > self.max_length]
            if not too_long:
                return batch
            for i in reversed(too_long):
                self.rejects.skip(prepared[i][0], f"too long: {lengths[i]} tokens > context {self.max_length}")
                del prepared[i]
        return None

    def _encode(self, prepared):
        tokenizer = self.processor.tokenizer
        texts = [prompt + answer for _, _, prompt, answer in prepared]
        batch = self.processor(
            text=texts, images=[image for _, image, _, _ in prepared], padding=True, padding_side="right", return_tensors="pt"
        )
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        for row, (item, _, _, answer) in enumerate(prepared):
            answer_ids = torch.tensor(tokenizer(answer, add_special_tokens=False)["input_ids"])
            end = int(batch["attention_mask"][row].sum())
            start = end - len(answer_ids)
            if start < 0 or not torch.equal(batch["input_ids"][row, start:end], answer_ids):
                raise ValueError(f"Item {item!r}: the answer tokens are not the tail of the encoded conversation; cannot mask labels.")
            labels[row, start:end] = answer_ids
        batch["labels"] = labels
        return batch
