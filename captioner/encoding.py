"""Turning (image, box, granularity[, caption]) into model inputs: chat prompts, bounded images, masked labels."""
from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .box_prompts import PAPER_BOX_FORMAT, BoxFormat, box_coordinates, build_messages, build_prompt
from .defaults import DEFAULT_MAX_IMAGE_TOKENS
from run_support.rejects import RejectLog

IGNORE_INDEX = -100



def load_image(image, item=None) -> Image.Image:
    """An RGB ``PIL.Image`` from a PIL image, a path, bytes, an array or a ``datasets`` image dict.

    The pixels are those of UniRES's one image→RGB rule (``modeling_unires``' ``to_rgb_image``: EXIF orientation,
    16-bit, alpha on white, palette, CMYK), the ones the data engine and UniRES's processor see.

    Raises:
        ValueError: naming ``item`` (or the path) when the image cannot be read.
    """
    # Imported here: modeling_unires brings transformers' image utilities (seconds) to `import captioner`.
    from modeling_unires.image_processing_unires import to_rgb_image

    label = f"item {item!r}" if item is not None else "image"
    try:
        if isinstance(image, dict):  # datasets.Image(decode=False) form
            image = image.get("bytes") or image.get("path")
        if isinstance(image, (str, os.PathLike)):
            with Image.open(image) as opened:
                return to_rgb_image(opened)
        if isinstance(image, (bytes, bytearray)):
            with Image.open(io.BytesIO(image)) as opened:
                return to_rgb_image(opened)
        if isinstance(image, (np.ndarray, Image.Image)):
            return to_rgb_image(image)
    except (OSError, UnidentifiedImageError, ValueError, TypeError) as error:
        raise ValueError(f"Cannot read the image of {label} ({image if isinstance(image, (str, os.PathLike)) else type(image).__name__}): {error}") from error
    raise ValueError(f"Cannot read the image of {label}: unsupported type {type(image).__name__}.")


# -- bounded image size ------------------------------------------------------------------------

def _pixels_per_token(processor) -> int | None:
    """Pixels one image token covers, for processors that resize to a pixel budget (the Qwen-VL family)."""
    image_processor = getattr(processor, "image_processor", None)
    patch, merge = getattr(image_processor, "patch_size", None), getattr(image_processor, "merge_size", None)
    if not isinstance(patch, int) or not isinstance(merge, int):
        return None
    return (patch * merge) ** 2


def _size_limits(processor) -> tuple[int | None, int | None]:
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    return get("shortest_edge") or get("min_pixels"), get("longest_edge") or get("max_pixels")


def image_processing_kwargs(processor, max_image_tokens: int | None = DEFAULT_MAX_IMAGE_TOKENS,
                            min_image_tokens: int | None = None) -> dict:
    """Keyword arguments for ``processor(...)`` that keep an image within ``max_image_tokens`` tokens.

    For processors that resize to a pixel budget (Qwen2-VL, Qwen2.5-VL, Qwen3-VL: ``size`` with
    ``shortest_edge``/``longest_edge`` in pixels), the budget becomes ``max_image_tokens`` tokens (never
    more than the processor's own). Other processors cut images into a fixed number of tiles already,
    so nothing is needed (``{}``). ``max_image_tokens=None`` keeps the processor's own limits.
    """
    per_token = _pixels_per_token(processor)
    if per_token is None or (max_image_tokens is None and min_image_tokens is None):
        return {}
    if max_image_tokens is not None and max_image_tokens < 1:
        raise ValueError(f"max_image_tokens must be positive, got {max_image_tokens}.")
    own_min, own_max = _size_limits(processor)
    longest = own_max
    if max_image_tokens is not None:
        longest = min(max_image_tokens * per_token, own_max or max_image_tokens * per_token)
    shortest = min_image_tokens * per_token if min_image_tokens is not None else own_min
    if shortest is not None and longest is not None:
        shortest = min(shortest, longest)
    return {"size": {"shortest_edge": int(shortest or per_token), "longest_edge": int(longest)}}


def resized_image_size(processor, image_size: tuple[int, int], image_kwargs: dict) -> tuple[int, int]:
    """``(width, height)`` the processor resizes an image of ``image_size`` to (Qwen-VL family)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    per_token = _pixels_per_token(processor)
    if per_token is None:
        raise ValueError(f"{type(processor).__name__} does not resize to a pixel budget; cannot give absolute box pixels.")
    own_min, own_max = _size_limits(processor)
    size = image_kwargs.get("size", {})
    width, height = image_size
    resized_height, resized_width = smart_resize(height, width, factor=int(per_token ** 0.5),
                                                 min_pixels=size.get("shortest_edge", own_min),
                                                 max_pixels=size.get("longest_edge", own_max))
    return resized_width, resized_height


# -- prompts -----------------------------------------------------------------------------------

def box_instruction(processor, image_size: tuple[int, int], box, granularity: str, box_format: BoxFormat = PAPER_BOX_FORMAT,
                    templates: dict | None = None, image_kwargs: dict | None = None, item=None) -> str:
    """The user instruction for one ``[x, y, w, h]`` pixel box, its box written in ``box_format``."""
    resized = resized_image_size(processor, image_size, image_kwargs or {}) if box_format.scale is None else None
    coordinates = box_coordinates(box, image_size, box_format, resized, item)
    return build_prompt(granularity, coordinates, templates, box_format)


def render_prompt(processor, granularity: str, coordinates: Sequence[int], templates: dict | None = None,
                  box_format: BoxFormat = PAPER_BOX_FORMAT) -> str:
    """The chat-formatted prompt text (with the generation prompt) for one box's coordinates."""
    return render_instruction(processor, build_prompt(granularity, coordinates, templates, box_format))


def render_instruction(processor, instruction: str) -> str:
    """The chat-formatted prompt text (image, instruction, generation prompt)."""
    return processor.apply_chat_template(build_messages(instruction), add_generation_prompt=True, tokenize=False)


def render_answer(processor, prompt_text: str, instruction: str, caption: str) -> str:
    """The assistant turn that follows ``prompt_text`` in the chat template (caption + end of turn).

    Raises:
        ValueError: when the generation prompt is not a prefix of prompt + answer (a template that
            adds, say, a ``<think>`` block to the generation prompt only): no answer could be masked.
    """
    full_text = processor.apply_chat_template(build_messages(instruction, caption), tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template's generation prompt is not a prefix of prompt + answer "
                         "(e.g. it opens a <think> block); cannot mask labels")
    return full_text[len(prompt_text):].rstrip()


def check_chat_template(processor) -> None:
    """Refuse, before any training step, a chat template under which no answer token can be supervised."""
    instruction = build_prompt("object", (0, 0, 1, 1))
    try:
        render_answer(processor, render_instruction(processor, instruction), instruction, "a dog")
    except ValueError as error:
        raise ValueError(f"Cannot fine-tune with this processor: {error}. Every row would be rejected.") from error


def context_length(model) -> int | None:
    """The language model's context size, when the config says it."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text_config, "max_position_embeddings", None)


# -- training batches --------------------------------------------------------------------------

class CaptionCollator:
    """Collate caption rows (``image``, ``bbox`` [x,y,w,h] pixels, ``granularity``, ``caption``) into a
    right-padded batch whose ``labels`` are -100 everywhere except on the answer tokens.

    A row whose image cannot be read, whose box is unusable, whose caption cannot be told apart from
    the prompt once tokenized (e.g. it begins with a newline), or whose encoding is longer than
    ``max_length`` is skipped and recorded in ``rejects``; every encoded row is counted as kept.

    In a DataLoader worker process the log lives in another process, so the batch carries its own
    accounting instead (``kept_rows``, ``rejected_rows``) for :func:`record_batch_accounting` to add in
    the main process. A batch whose rows were all rejected collates to a *placeholder*: one synthetic
    row with ``placeholder=True`` that the trainer runs at zero loss so that every rank steps together.

    Args:
        box_format: how boxes are written (use ``box_format_for(model)``: the base family's own syntax).
        max_image_tokens: cap on the tokens of one image (see :func:`image_processing_kwargs`).
    """

    def __init__(self, processor, max_length: int | None = None, templates: dict | None = None, rejects: RejectLog | None = None,
                 box_format: BoxFormat = PAPER_BOX_FORMAT, max_image_tokens: int | None = DEFAULT_MAX_IMAGE_TOKENS):
        check_chat_template(processor)
        self.processor = processor
        self.max_length = max_length
        self.templates = templates
        self.box_format = box_format
        self.image_kwargs = image_processing_kwargs(processor, max_image_tokens)
        self.rejects = rejects if rejects is not None else RejectLog(stage="caption_training")

    def __getstate__(self):
        # DataLoader workers get a copy; the log (an open file) stays in the main process.
        return {**self.__dict__, "rejects": None}

    def _item(self, row: dict, index: int):
        return row.get("id") or f"{row.get('source', '')}:{row.get('image_id', index)}:{list(row.get('bbox', []))}"

    def _prepare(self, row: dict, index: int):
        item = self._item(row, index)
        caption = row.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError(f"empty caption: {caption!r}")
        image = load_image(row["image"], item)
        instruction = box_instruction(self.processor, image.size, row["bbox"], row["granularity"], self.box_format,
                                      self.templates, self.image_kwargs, item)
        prompt = render_instruction(self.processor, instruction)
        answer = render_answer(self.processor, prompt, instruction, caption)
        tokenizer = self.processor.tokenizer
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(prompt + answer, add_special_tokens=False)["input_ids"]
        if full_ids[len(full_ids) - len(answer_ids):] != answer_ids:
            raise ValueError(f"malformed caption: {caption[:40]!r} merges with the prompt when tokenized "
                             "(e.g. it begins with a newline); its tokens cannot be told apart")
        return item, image, prompt, answer

    def __call__(self, rows: list[dict]):
        accounting = {"kept_rows": 0, "rejected_rows": []}
        prepared = []
        for index, row in enumerate(rows):
            try:
                prepared.append(self._prepare(row, index))
            except (ValueError, KeyError, TypeError) as error:
                accounting["rejected_rows"].append((str(self._item(row, index)), f"bad item: {error}"))
        batch = None
        while prepared:
            batch, misfits = self._encode(prepared)
            if not misfits:
                break
            for i, reason in reversed(misfits):
                accounting["rejected_rows"].append((str(prepared[i][0]), reason))
                del prepared[i]
            batch = None
        accounting["kept_rows"] = len(prepared)
        if batch is None:
            batch = self._placeholder()
        if self.rejects is not None and torch.utils.data.get_worker_info() is None:  # same process as the log: record now
            record_batch_accounting(self.rejects, accounting)
        else:
            batch.update(accounting)
        return batch

    def _placeholder(self):
        """One synthetic, well-formed row for a zero-loss step (its content never trains anything)."""
        image = Image.new("RGB", (64, 64))
        instruction = box_instruction(self.processor, image.size, [0, 0, 64, 64], "image", self.box_format,
                                      self.templates, self.image_kwargs)
        prompt = render_instruction(self.processor, instruction)
        batch, misfits = self._encode([("placeholder", image, prompt, render_answer(self.processor, prompt, instruction, "."))],
                                      check_length=False)
        if misfits:
            raise ValueError(f"Cannot build a placeholder batch: {misfits[0][1]}")
        batch["placeholder"] = True
        return batch

    def _encode(self, prepared, check_length: bool = True):
        """The batch, and ``(index, reason)`` of every row that does not fit (too long, labels misaligned)."""
        tokenizer = self.processor.tokenizer
        texts = [prompt + answer for _, _, prompt, answer in prepared]
        batch = self.processor(text=texts, images=[image for _, image, _, _ in prepared], padding=True,
                               padding_side="right", return_tensors="pt", **self.image_kwargs)
        labels = torch.full_like(batch["input_ids"], IGNORE_INDEX)
        misfits = []
        for row, (item, _, _, answer) in enumerate(prepared):
            answer_ids = torch.tensor(tokenizer(answer, add_special_tokens=False)["input_ids"])
            end = int(batch["attention_mask"][row].sum())
            start = end - len(answer_ids)
            if check_length and self.max_length and end > self.max_length:
                misfits.append((row, f"too long: {end} tokens > context {self.max_length}"))
            elif start < 0 or not torch.equal(batch["input_ids"][row, start:end], answer_ids):
                misfits.append((row, "bad item: the answer tokens are not the tail of the encoded conversation; cannot mask labels"))
            else:
                labels[row, start:end] = answer_ids
        batch["labels"] = labels
        return batch, misfits


def record_batch_accounting(rejects: RejectLog, accounting: dict) -> None:
    """Add a batch's ``kept_rows`` and ``rejected_rows`` (from a collator, perhaps in a worker) to ``rejects``."""
    rejects.keep(int(accounting.get("kept_rows", 0)))
    for item, reason in accounting.get("rejected_rows", ()):
        rejects.skip(item, reason)
