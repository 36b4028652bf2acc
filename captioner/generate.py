"""Batched dense captioning: one caption per box, one image encoding per image, batches sized by a token budget.

Every box of an image shares the image's prompt prefix (chat text up to the instruction, image
tokens included). That prefix runs through the model once per image (the vision tower and the
language model's key/value cache); each box then only adds its instruction and its answer, generated
from a copy of its image's rows of the prefix cache. Images whose boxes fit one generation batch
together are encoded and captioned together. A chat template that puts the instruction before the image cannot
share a prefix; those boxes are captioned with one full prompt each, as is any box with
``share_image_prefix=False``.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch
from tqdm.auto import tqdm
from transformers import DynamicCache

from .box_prompts import CAPTION_GRANULARITIES, BoxFormat, box_format_for
from .defaults import DEFAULT_BASE_MODEL
from .encoding import (
    DEFAULT_MAX_IMAGE_TOKENS,
    _pixels_per_token,
    box_instruction,
    context_length,
    image_processing_kwargs,
    load_image,
    render_instruction,
    resized_image_size,
)
from .modeling import load_captioner
from run_support.rejects import RejectLog

logger = logging.getLogger(__name__)

# Stands in for the instruction when finding where the shared prefix ends.
_INSTRUCTION_SENTINEL = "\u2063CAPTIONER-INSTRUCTION\u2063"


@dataclass
class BoxCaption:
    """One box's caption; ``truncated`` is True when generation hit ``max_new_tokens`` before an
    end-of-sequence token (the text is then cut off, and a data engine should reject it)."""

    text: str
    truncated: bool = False


@dataclass
class BoxRequest:
    """One box to caption: ``box`` is ``[x, y, w, h]`` in pixels of ``image``."""

    image: Any
    box: Sequence[float]
    granularity: str = "object"
    item: Any = None


@dataclass
class _Prepared:
    index: int
    item: Any
    image_key: Any
    prompt: str
    suffix_ids: list | None  # the prompt after the shared prefix; None: caption with the full prompt
    cost: int = field(default=0)
    slot: int = field(default=0)  # which image of a packed prefix batch it continues


def _image_key(image, fallback=None):
    """What identifies one image among requests: its path, its bytes, or the object itself."""
    if isinstance(image, (str, os.PathLike)):
        return ("path", os.path.abspath(os.fspath(image)))
    if isinstance(image, dict):
        if image.get("path") and not image.get("bytes"):
            return ("path", os.path.abspath(image["path"]))
        if image.get("bytes"):
            return ("bytes", hashlib.sha1(image["bytes"]).hexdigest())
    if fallback is not None:
        return ("id", fallback)
    return ("object", id(image))


class DenseCaptioner:
    """Caption boxes with an LVLM (base or LoRA fine-tuned).

    Args:
        model: an ``AutoModelForImageTextToText`` model (merged adapter or ``PeftModel``).
        processor: its processor (with a chat template).
        max_new_tokens: longest caption, in tokens; a caption cut there is marked ``truncated``.
        token_budget: at most this many (padded prompt + new) tokens per generation batch.
        max_batch_size: at most this many boxes per batch.
        templates: prompt per granularity (default ``box_prompts.PROMPT_TEMPLATES``).
        generation_kwargs: passed to ``generate``; decoding is greedy (deterministic) unless overridden.
        progress_threshold: show a progress bar when captioning at least this many boxes.
        box_format: how boxes are written in prompts (default: the base family's own, from the config).
        max_image_tokens: cap on the tokens of one image (Qwen recommends 256-1,280); ``None``: the processor's own.
        share_image_prefix: encode each image once for all its boxes (see the module docstring); greedy or
            sampled decoding of one sequence per box only (beam search captions each box with its full prompt).
    """

    def __init__(
        self,
        model,
        processor,
        max_new_tokens: int = 32,
        token_budget: int = 16384,
        max_batch_size: int = 64,
        templates: dict | None = None,
        generation_kwargs: dict | None = None,
        progress_threshold: int = 64,
        box_format: BoxFormat | None = None,
        max_image_tokens: int | None = DEFAULT_MAX_IMAGE_TOKENS,
        share_image_prefix: bool = True,
    ):
        if max_new_tokens < 1 or token_budget < 1 or max_batch_size < 1:
            raise ValueError("max_new_tokens, token_budget and max_batch_size must be positive.")
        self.model = model.eval()
        self.processor = processor
        self.max_new_tokens = max_new_tokens
        self.token_budget = token_budget
        self.max_batch_size = max_batch_size
        self.templates = templates
        self.generation_kwargs = {"do_sample": False, "num_beams": 1, **(generation_kwargs or {})}
        self.progress_threshold = progress_threshold
        self.context = context_length(model)
        self.box_format = box_format or box_format_for(model)
        self.image_kwargs = image_processing_kwargs(processor, max_image_tokens)
        # beam search and several returned sequences expand the batch inside generate, which a prefilled cache does not follow
        single_sequence = self.generation_kwargs.get("num_beams", 1) == 1 and self.generation_kwargs.get("num_return_sequences", 1) == 1
        self.prefix_text = self._find_prefix() if share_image_prefix and single_sequence else None
        self._image_tokens: dict = {}
        # Models with multimodal RoPE (Qwen-VL) keep the prefix's position offset (rope_deltas) on a module.
        self._rope_modules = [module for module in model.modules() if hasattr(module, "rope_deltas")]
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        parameters = inspect.signature(inner.forward).parameters
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"  # renamed in transformers 5.x
        self._prefix_kwargs = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_BASE_MODEL, base_model: str | None = None, merge: bool = True,
                        torch_dtype=None, device: str | torch.device | None = None, **kwargs) -> "DenseCaptioner":
        """Load a base model or a saved adapter (local folder or Hub id; merged by default) and wrap it."""
        model, processor = load_captioner(name_or_path, base_model=base_model, merge=merge, torch_dtype=torch_dtype)
        if device is not None:
            model.to(device)
        return cls(model, processor, **kwargs)

    # -- public API ---------------------------------------------------------------------------
    def caption_boxes(self, image, boxes: Sequence[Sequence[float]], granularities: str | Sequence[str] = "object") -> list[BoxCaption]:
        """One :class:`BoxCaption` per ``[x, y, w, h]`` pixel box of one image (a PIL image or a path),
        in the order of ``boxes``; ``granularities`` is one string for all boxes or one per box. The
        image is encoded once for all its boxes."""
        granularities = [granularities] * len(boxes) if isinstance(granularities, str) else list(granularities)
        if len(granularities) != len(boxes):
            raise ValueError(f"Got {len(granularities)} granularities for {len(boxes)} boxes.")
        return self.caption_requests_full([BoxRequest(image, box, g, item=f"box {i}") for i, (box, g) in enumerate(zip(boxes, granularities))])

    def caption(self, image, boxes: Sequence[Sequence[float]], granularity: str | Sequence[str] = "object") -> list[str]:
        """One caption per ``[x, y, w, h]`` box of one image, in the order of ``boxes``."""
        return [result.text for result in self.caption_boxes(image, boxes, granularity)]

    def caption_requests(self, requests: Sequence[BoxRequest]) -> list[str]:
        """One caption per request, in input order (requests may span many images).

        Raises:
            ValueError: naming the request whose image, box, granularity or length is unusable.
        """
        return [result.text for result in self.caption_requests_full(requests)]

    def caption_requests_full(self, requests: Sequence[BoxRequest]) -> list[BoxCaption]:
        """Like :meth:`caption_requests`, with each caption's ``truncated`` flag."""
        images: dict = {}
        prepared = [self._prepare(request, index, images) for index, request in enumerate(requests)]
        return self._generate_all(prepared, images)

    def caption_dataset(self, rows: Iterable[dict], rejects: RejectLog | None = None, chunk_size: int = 512) -> Iterator[dict]:
        """Caption rows with ``image``, ``bbox`` [x,y,w,h] and optional ``granularity``/``image_id``.

        Yields ``{"index", "image_id", "bbox", "granularity", "caption", "truncated"}`` per usable row, in
        order; unusable rows are skipped and counted in ``rejects`` with their reason. Rows of one image
        (same path, bytes or ``image_id``) within a chunk share one decoded copy and one encoding; give
        a ``datasets`` column undecoded (``ds.cast_column("image", datasets.Image(decode=False))``) so
        that ``datasets`` does not decode it once per row before it gets here.
        """
        rejects = rejects if rejects is not None else RejectLog(stage="caption")
        chunk: list[tuple[int, dict, _Prepared]] = []
        images: dict = {}

        def flush():
            captions = self._generate_all([prepared for _, _, prepared in chunk], images)
            for (index, row, _), caption in zip(chunk, captions):
                rejects.keep()
                yield {"index": index, "image_id": row.get("image_id"), "bbox": list(row["bbox"]),
                       "granularity": row.get("granularity", "object"), "caption": caption.text, "truncated": caption.truncated}
            chunk.clear()
            images.clear()

        for index, row in enumerate(rows):
            item = row.get("image_id", index) if isinstance(row, dict) else index
            try:
                request = BoxRequest(row["image"], row["bbox"], row.get("granularity", "object"), item=f"row {index} ({item})")
                key = _image_key(row["image"], row.get("image_id"))
                chunk.append((index, row, self._prepare(request, index, images, key)))
            except (ValueError, KeyError, TypeError) as error:
                rejects.skip(f"row {index} ({item})", f"bad item: {error}")
                continue
            if len(chunk) >= chunk_size:
                yield from flush()
        if chunk:
            yield from flush()
        rejects.close()

    # -- preparing prompts --------------------------------------------------------------------
    def _find_prefix(self) -> str | None:
        """The chat text every box of an image shares (up to the instruction), if it holds the image."""
        text = render_instruction(self.processor, _INSTRUCTION_SENTINEL)
        image_token = getattr(self.processor, "image_token", None)
        prefix = text.split(_INSTRUCTION_SENTINEL)[0] if _INSTRUCTION_SENTINEL in text else ""
        if not prefix or not image_token or image_token not in prefix:
            logger.info("the chat template does not put the image before the instruction: each box is captioned with its full prompt")
            return None
        return prefix

    def _prepare(self, request: BoxRequest, index: int, images: dict, key=None) -> _Prepared:
        item = request.item if request.item is not None else f"request {index}"
        if request.granularity not in (self.templates or CAPTION_GRANULARITIES):
            raise ValueError(f"Item {item!r}: unknown granularity {request.granularity!r}.")
        key = key if key is not None else _image_key(request.image)
        if key not in images:  # decode each image once, keep one copy (and the original, so its id stays unique)
            images[key] = (load_image(request.image, item), request.image)
        image = images[key][0]
        instruction = box_instruction(self.processor, image.size, request.box, request.granularity, self.box_format,
                                      self.templates, self.image_kwargs, item)
        prompt = render_instruction(self.processor, instruction)
        tokenizer = self.processor.tokenizer
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        suffix_ids = None
        if self.prefix_text is not None and prompt.startswith(self.prefix_text):
            prefix_ids = tokenizer(self.prefix_text, add_special_tokens=False)["input_ids"]
            candidate = tokenizer(prompt[len(self.prefix_text):], add_special_tokens=False)["input_ids"]
            if prefix_ids + candidate == prompt_ids:  # the split does not change the tokenization
                suffix_ids = candidate
        prepared = _Prepared(index, item, key, prompt, suffix_ids)
        prepared.cost = len(prompt_ids) + self._count_image_tokens(image, prompt) + self.max_new_tokens
        if self.context and prepared.cost > self.context:
            raise ValueError(f"Item {item!r}: prompt plus {self.max_new_tokens} new tokens is {prepared.cost} tokens, longer than the model's context ({self.context}).")
        return prepared

    def _count_image_tokens(self, image, prompt: str) -> int:
        """Tokens the image expands to (from the resize rule when the processor has one; else by processing once per size)."""
        if image.size not in self._image_tokens:
            per_token = _pixels_per_token(self.processor)
            if per_token is not None:
                width, height = resized_image_size(self.processor, image.size, self.image_kwargs)
                self._image_tokens[image.size] = width * height // per_token
            else:
                text_tokens = len(self.processor.tokenizer(prompt, add_special_tokens=False)["input_ids"])
                encoded = self.processor(text=[prompt], images=[image], return_tensors="pt", **self.image_kwargs)
                self._image_tokens[image.size] = int(encoded["input_ids"].shape[1]) - text_tokens
        return self._image_tokens[image.size]

    def _batches(self, prepared: list[_Prepared], fixed_cost: int = 0) -> list[list[_Prepared]]:
        """Greedy batches of similar length whose padded size fits the token budget."""
        batches, current = [], []
        for entry in sorted(prepared, key=lambda p: p.cost, reverse=True):
            longest = current[0].cost if current else entry.cost
            if current and (len(current) >= self.max_batch_size or (longest + fixed_cost) * (len(current) + 1) > self.token_budget):
                batches.append(current)
                current = []
            current.append(entry)
        if current:
            batches.append(current)
        return batches

    # -- generating ---------------------------------------------------------------------------
    @torch.inference_mode()
    def _generate_all(self, prepared: list[_Prepared], images: dict) -> list[BoxCaption]:
        captions: dict[int, BoxCaption] = {}
        bar = tqdm(total=len(prepared), desc="captioning", unit="box", disable=len(prepared) < self.progress_threshold)
        groups: dict[Any, list[_Prepared]] = {}
        for entry in prepared:
            if entry.suffix_ids is not None:
                groups.setdefault(entry.image_key, []).append(entry)
        for pack in self._packs(groups):  # a few images at a time: their encodings are dropped before the next
            for entry, caption in self._generate_shared([(images[key][0], groups[key]) for key in pack]):
                captions[entry.index] = caption
                bar.update(1)
        unshared = [entry for entry in prepared if entry.suffix_ids is None]
        for batch in self._batches(unshared):
            for entry, caption in zip(batch, self._generate(batch, images)):
                captions[entry.index] = caption
            bar.update(len(batch))
        bar.close()
        return [captions[entry.index] for entry in prepared]

    def _eos_and_kwargs(self) -> tuple[list, dict]:
        tokenizer = self.processor.tokenizer
        eos = self.model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
            eos.append(tokenizer.eos_token_id)
        kwargs = {"max_new_tokens": self.max_new_tokens, "eos_token_id": eos or None,
                  "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else None),
                  **self.generation_kwargs}
        return eos, kwargs

    def _decode(self, output: torch.Tensor, prompt_length: int, eos: list) -> list[BoxCaption]:
        new_tokens = output[:, prompt_length:]
        texts = self.processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [BoxCaption(text.strip(), self._is_truncated(tokens, eos)) for text, tokens in zip(texts, new_tokens)]

    def _is_truncated(self, new_tokens: torch.Tensor, eos: list[int]) -> bool:
        """Generation used every one of ``max_new_tokens`` and none of them ends the sequence."""
        return len(new_tokens) >= self.max_new_tokens and not any(int(t) in eos for t in new_tokens)

    def _generate(self, batch: list[_Prepared], images: dict) -> list[BoxCaption]:
        """Full prompts, one image encoding per box (templates whose prefix cannot be shared)."""
        inputs = self.processor(
            text=[entry.prompt for entry in batch], images=[images[entry.image_key][0] for entry in batch],
            padding=True, padding_side="left", return_tensors="pt", **self.image_kwargs,
        ).to(self.model.device)
        eos, kwargs = self._eos_and_kwargs()
        output = self.model.generate(**inputs, **kwargs)
        return self._decode(output, inputs["input_ids"].shape[1], eos)

    def _packs(self, groups: dict) -> list[list]:
        """Images whose boxes, together, fit one generation batch go through the model together; an
        image with more boxes than a batch holds is packed alone (its boxes then share its prefix over
        several batches)."""
        packs, current, rows, longest = [], [], 0, 0
        for key, entries in groups.items():
            count, cost = len(entries), max(entry.cost for entry in entries)
            fits = count <= self.max_batch_size and cost * count <= self.token_budget
            if current and (not fits or rows + count > self.max_batch_size or max(longest, cost) * (rows + count) > self.token_budget):
                packs.append(current)
                current, rows, longest = [], 0, 0
            current.append(key)
            rows, longest = rows + count, max(longest, cost)
            if not fits:
                packs.append(current)
                current, rows, longest = [], 0, 0
        if current:
            packs.append(current)
        return packs

    def _generate_shared(self, pack: list[tuple[Any, list[_Prepared]]]) -> Iterator[tuple[_Prepared, BoxCaption]]:
        """All boxes of a few images from one prefix encoding per image: the images and the chat text
        before the instruction go through the model once (left-padded to a batch); each batch of boxes
        continues from the cache rows of its own image."""
        images = [image for image, _ in pack]
        prefix = self.processor(text=[self.prefix_text] * len(images), images=images, padding=True, padding_side="left",
                                return_tensors="pt", **self.image_kwargs).to(self.model.device)
        cache = DynamicCache(config=self.model.config)
        self.model(**prefix, **{self._cache_kwarg: cache}, use_cache=True, **self._prefix_kwargs)
        rope_state = [module.rope_deltas for module in self._rope_modules]
        prefix_ids, prefix_mask = prefix["input_ids"], prefix["attention_mask"]
        entries = []
        for slot, (_, group) in enumerate(pack):
            for entry in group:
                entry.slot = slot
                entries.append(entry)
        eos, kwargs = self._eos_and_kwargs()
        pad = kwargs["pad_token_id"] if kwargs["pad_token_id"] is not None else 0
        for batch in self._batches(entries):
            slots = torch.tensor([entry.slot for entry in batch], device=prefix_ids.device)
            for module, deltas in zip(self._rope_modules, rope_state):
                # positions continue after each row's own prefix, as in its full prompt
                module.rope_deltas = deltas[slots.to(deltas.device)] if torch.is_tensor(deltas) and deltas.shape[0] == len(images) else deltas
            longest = max(len(entry.suffix_ids) for entry in batch)
            # left-pad each box's suffix: [pad...][prefix][pad...][suffix]; the mask hides the pads, positions skip them
            suffix = torch.full((len(batch), longest), pad, dtype=prefix_ids.dtype)
            suffix_mask = torch.zeros((len(batch), longest), dtype=prefix_mask.dtype)
            for row, entry in enumerate(batch):
                suffix[row, longest - len(entry.suffix_ids):] = torch.tensor(entry.suffix_ids)
                suffix_mask[row, longest - len(entry.suffix_ids):] = 1
            input_ids = torch.cat([prefix_ids[slots], suffix.to(prefix_ids.device)], dim=1)
            attention_mask = torch.cat([prefix_mask[slots], suffix_mask.to(prefix_mask.device)], dim=1)
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_select_indices(slots)
            output = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **{self._cache_kwarg: batch_cache}, **kwargs)
            yield from zip(batch, self._decode(output, input_ids.shape[1], eos))
