"""Batched dense captioning: one caption per box, batches sized by a token budget."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

from .box_prompts import CAPTION_GRANULARITIES, normalize_box
from .defaults import DEFAULT_BASE_MODEL
from .encoding import context_length, load_image, render_prompt
from .modeling import load_captioner
from dataset_scripts.rejects import RejectLog

logger = logging.getLogger(__name__)


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
    image: Any
    prompt: str
    cost: int = field(default=0)


class DenseCaptioner:
    """Caption boxes with an LVLM (base or LoRA fine-tuned).

    Args:
        model: an ``AutoModelForImageTextToText`` model (merged adapter or ``PeftModel``).
        processor: its processor (with a chat template).
        max_new_tokens: longest caption, in tokens.
        token_budget: at most this many (padded prompt + new) tokens per generation batch.
        max_batch_size: at most this many boxes per batch.
        templates: prompt per granularity (default ``box_prompts.PROMPT_TEMPLATES``).
        generation_kwargs: passed to ``generate``; decoding is greedy (deterministic) unless overridden.
        progress_threshold: show a progress bar when captioning at least this many boxes.
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
        self._image_tokens: dict = {}

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_BASE_MODEL, base_model: str | None = None, merge: bool = True,
                        torch_dtype=None, device: str | torch.device | None = None, **kwargs) -> "DenseCaptioner":
        """Load a base model or a saved adapter (merged by default) and wrap it."""
        model, processor = load_captioner(name_or_path, base_model=base_model, merge=merge, torch_dtype=torch_dtype)
        if device is not None:
            model.to(device)
        return cls(model, processor, **kwargs)

    # -- public API ---------------------------------------------------------------------------
    def caption(self, image, boxes: Sequence[Sequence[float]], granularity: str | Sequence[str] = "object") -> list[str]:
        """One caption per ``[x, y, w, h]`` box of one image, in the order of ``boxes``."""
        return [result.text for result in self.caption_boxes(image, boxes, granularity)]

    def caption_boxes(self, image, boxes: Sequence[Sequence[float]], granularities: str | Sequence[str] = "object") -> list[BoxCaption]:
        """One :class:`BoxCaption` per ``[x, y, w, h]`` pixel box of one image (a PIL image or a path),
        in the order of ``boxes``; ``granularities`` is one string for all boxes or one per box."""
        image = load_image(image)
        granularities = [granularities] * len(boxes) if isinstance(granularities, str) else list(granularities)
        if len(granularities) != len(boxes):
            raise ValueError(f"Got {len(granularities)} granularities for {len(boxes)} boxes.")
        return self.caption_requests_full([BoxRequest(image, box, g, item=f"box {i}") for i, (box, g) in enumerate(zip(boxes, granularities))])

    def caption_requests(self, requests: Sequence[BoxRequest]) -> list[str]:
        """One caption per request, in input order (requests may span many images).

        Raises:
            ValueError: naming the request whose image, box, granularity or length is unusable.
        """
        return [result.text for result in self.caption_requests_full(requests)]

    def caption_requests_full(self, requests: Sequence[BoxRequest]) -> list[BoxCaption]:
        """Like :meth:`caption_requests`, with each caption's ``truncated`` flag."""
        prepared = [self._prepare(request, index) for index, request in enumerate(requests)]
        return self._generate_all(prepared, len(requests))

    def caption_dataset(self, rows: Iterable[dict], rejects: RejectLog | None = None, chunk_size: int = 512) -> Iterator[dict]:
        """Caption rows with ``image``, ``bbox`` [x,y,w,h] and optional ``granularity``/``image_id``.

        Yields ``{"index", "image_id", "bbox", "granularity", "caption"}`` per usable row, in order;
        unusable rows are skipped and counted in ``rejects`` with their reason.
        """
        rejects = rejects if rejects is not None else RejectLog(stage="caption")
        chunk: list[tuple[int, dict, _Prepared]] = []

        def flush():
            captions = self._generate_all([prepared for _, _, prepared in chunk], None)
            for (index, row, _), caption in zip(chunk, captions):
                yield {"index": index, "image_id": row.get("image_id"), "bbox": list(row["bbox"]),
                       "granularity": row.get("granularity", "object"), "caption": caption.text, "truncated": caption.truncated}
            chunk.clear()

        for index, row in enumerate(rows):
            item = row.get("image_id", index) if isinstance(row, dict) else index
            try:
                request = BoxRequest(row["image"], row["bbox"], row.get("granularity", "object"), item=f"row {index} ({item})")
                chunk.append((index, row, self._prepare(request, index)))
            except (ValueError, KeyError, TypeError) as error:
                rejects.skip(f"row {index} ({item})", f"bad item: {error}")
                continue
            if len(chunk) >= chunk_size:
                yield from flush()
        if chunk:
            yield from flush()
        rejects.close()

    # -- internals ----------------------------------------------------------------------------
    def _prepare(self, request: BoxRequest, index: int) -> _Prepared:
        item = request.item if request.item is not None else f"request {index}"
        if request.granularity not in (self.templates or CAPTION_GRANULARITIES):
            raise ValueError(f"Item {item!r}: unknown granularity {request.granularity!r}.")
        image = load_image(request.image, item)
        box = normalize_box(request.box, image.size, item)
        prompt = render_prompt(self.processor, request.granularity, box, self.templates)
        prepared = _Prepared(index, item, image, prompt)
        prepared.cost = self._prompt_tokens(prepared) + self.max_new_tokens
        if self.context and prepared.cost > self.context:
            raise ValueError(f"Item {item!r}: prompt plus {self.max_new_tokens} new tokens is {prepared.cost} tokens, longer than the model's context ({self.context}).")
        return prepared

    def _prompt_tokens(self, prepared: _Prepared) -> int:
        """Text tokens plus the image's expanded placeholder tokens (cached per image size)."""
        text_tokens = len(self.processor.tokenizer(prepared.prompt, add_special_tokens=False)["input_ids"])
        size = prepared.image.size
        if size not in self._image_tokens:
            try:  # processors that can count without processing pixels
                counted = self.processor._get_num_multimodal_tokens(image_sizes=[(size[1], size[0])])
                self._image_tokens[size] = int(counted["num_image_tokens"][0]) - 1
            except (AttributeError, NotImplementedError, KeyError, TypeError):
                encoded = self.processor(text=[prepared.prompt], images=[prepared.image], return_tensors="pt")
                self._image_tokens[size] = int(encoded["input_ids"].shape[1]) - text_tokens
        return text_tokens + self._image_tokens[size]

    def _batches(self, prepared: list[_Prepared]) -> list[list[_Prepared]]:
        """Greedy batches of similar length whose padded size fits the token budget."""
        batches, current = [], []
        for entry in sorted(prepared, key=lambda p: p.cost, reverse=True):
            longest = current[0].cost if current else entry.cost
            if current and (len(current) >= self.max_batch_size or longest * (len(current) + 1) > self.token_budget):
                batches.append(current)
                current = []
            current.append(entry)
        if current:
            batches.append(current)
        return batches

    @torch.inference_mode()
    def _generate_all(self, prepared: list[_Prepared], total: int | None) -> list[BoxCaption]:
        captions: dict[int, BoxCaption] = {}
        bar = tqdm(total=len(prepared), desc="captioning", unit="box", disable=len(prepared) < self.progress_threshold)
        for batch in self._batches(prepared):
            for entry, caption in zip(batch, self._generate(batch)):
                captions[entry.index] = caption
            bar.update(len(batch))
        bar.close()
        return [captions[entry.index] for entry in prepared]

    def _generate(self, batch: list[_Prepared]) -> list[BoxCaption]:
        tokenizer = self.processor.tokenizer
        inputs = self.processor(
            text=[entry.prompt for entry in batch], images=[entry.image for entry in batch],
            padding=True, padding_side="left", return_tensors="pt",
        ).to(self.model.device)
        eos = self.model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
            eos.append(tokenizer.eos_token_id)
        kwargs = {"max_new_tokens": self.max_new_tokens, "eos_token_id": eos or None,
                  "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos[0] if eos else None),
                  **self.generation_kwargs}
        output = self.model.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [BoxCaption(text.strip(), self._is_truncated(tokens, eos)) for text, tokens in zip(texts, new_tokens)]

    def _is_truncated(self, new_tokens: torch.Tensor, eos: list[int]) -> bool:
        """Generation used every one of ``max_new_tokens`` and none of them ends the sequence."""
        return len(new_tokens) >= self.max_new_tokens and not any(int(t) in eos for t in new_tokens)
