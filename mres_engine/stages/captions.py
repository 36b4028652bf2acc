"""Stage 5, captions: the dense captioner describes every kept object and part box.

Locally, :class:`captioner.DenseCaptioner` captions all boxes of a batch of images together,
in generation batches bounded by a token budget (each image encoded once). At scale the same
prompts can go to an OpenAI-compatible server that serves the captioner (vLLM, TGI, ...)
through the chat client the part-vocabulary stage uses too (:class:`OpenAICaptioner` on
:class:`~mres_engine.backends.OpenAIChatClient`). A caption cut at
``max_new_tokens`` or empty is a referent reject; an image left with no referent is rejected.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import replace

from captioner.box_prompts import BOX_FORMATS, PAPER_BOX_FORMAT, box_coordinates, build_prompt
from captioner.defaults import DEFAULT_BASE_MODEL

from ..backends import LazyModel, OpenAIChatClient
from ..options import StageOptions, resolve_device, resolve_dtype
from ..records import ImageRecord, without_referents
from .base import Reject, StageOutput


SERVER_BOX_FORMATS = ("qwen3_vl", "qwen2_vl", "paper")


class OpenAICaptioner:
    """Captions through an OpenAI-compatible chat endpoint serving the captioner: the image as a
    PNG data URL, the captioner's own prompt for the box in the box syntax of the served model's
    family (``box_format``: the server cannot be asked which it is; Qwen2.5-VL's absolute pixels
    of the resized image are not offered, since the client does not know the server's resize).
    A reply whose ``finish_reason`` is ``"length"`` is flagged truncated, as the local captioner
    flags a caption cut at ``max_new_tokens``.
    """

    def __init__(self, client: OpenAIChatClient, max_new_tokens: int = 32, box_format: str = "qwen3_vl"):
        if box_format not in SERVER_BOX_FORMATS:
            raise ValueError(f"captioner_box_format={box_format!r} is not one of {SERVER_BOX_FORMATS}")
        self.client = client
        self.max_new_tokens = max_new_tokens
        self.box_format = PAPER_BOX_FORMAT if box_format == "paper" else BOX_FORMATS[box_format]

    def caption_requests_full(self, requests):
        from captioner.generate import BoxCaption  # the captioner's generation code loads torch and transformers

        results = []
        encoded: dict[int, str] = {}
        for request in requests:
            image = request.image
            if id(image) not in encoded:
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                encoded[id(image)] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
            coordinates = box_coordinates(request.box, image.size, self.box_format, item=request.item)
            prompt = build_prompt(request.granularity, coordinates, box_format=self.box_format)
            messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": encoded[id(image)]}},
                                                     {"type": "text", "text": prompt}]}]
            text, finish_reason = self.client.complete(messages, max_tokens=self.max_new_tokens)
            results.append(BoxCaption(text.strip(), truncated=finish_reason == "length"))
        return results


class Captions:
    """One sentence per referent from a captioner.

    Args:
        captioner: anything with ``caption_requests_full(list[captioner.BoxRequest]) ->
            list[captioner.BoxCaption]`` (a :class:`captioner.DenseCaptioner` or an
            :class:`OpenAICaptioner`); or None to load ``captioner_id`` on first use.
        captioner_id, device, dtype, max_new_tokens, token_budget: how to load the default one.
    """

    name = "captions"

    def __init__(self, captioner=None, captioner_id: str | None = None, device: str = "cpu", dtype=None,
                 max_new_tokens: int = 32, token_budget: int = 16384):
        self.captioner_id = captioner_id
        self.device = device
        self.dtype = dtype
        self.max_new_tokens = max_new_tokens
        self.token_budget = token_budget
        self._captioner = LazyModel(self._load_default, model=captioner)  # the captioner places itself on device

    @classmethod
    def from_options(cls, options: StageOptions) -> "Captions":
        if options.captioner_url:
            model = options.captioner or "captioner"
            client = OpenAIChatClient(options.captioner_url, model, os.environ.get(options.part_llm_api_key_env))
            captioner = OpenAICaptioner(client, options.caption_max_new_tokens, options.captioner_box_format)
            return cls(captioner, max_new_tokens=options.caption_max_new_tokens)
        device = resolve_device(options.device)
        return cls(captioner_id=options.captioner, device=device, dtype=resolve_dtype(options.dtype, device),
                   max_new_tokens=options.caption_max_new_tokens, token_budget=options.caption_token_budget)

    def _load_default(self):
        from captioner import DenseCaptioner  # the model: torch, transformers, peft

        captioner = DenseCaptioner.from_pretrained(self.captioner_id or DEFAULT_BASE_MODEL, torch_dtype=self.dtype,
                                                   device=self.device, max_new_tokens=self.max_new_tokens,
                                                   token_budget=self.token_budget)
        return captioner, None

    @property
    def captioner(self):
        return self._captioner.get()[0]

    def __call__(self, records: list[ImageRecord]) -> StageOutput:
        from captioner.generate import BoxRequest  # the captioner's generation code loads torch and transformers

        requests, owners = [], []
        for index, record in enumerate(records):
            for referent in record.referents:
                requests.append(BoxRequest(record.image, referent["bbox"], referent["granularity"], item=referent["referent_id"]))
                owners.append((index, referent["referent_id"]))
        captions = self.captioner.caption_requests_full(requests) if requests else []
        texts: dict[str, str] = {}
        removed: list[set[str]] = [set() for _ in records]
        out = StageOutput()
        for (index, referent_id), caption in zip(owners, captions):
            text = " ".join(caption.text.split())
            if caption.truncated:
                reason = f"caption truncated at {self.max_new_tokens} tokens: {text[:60]!r}"
            elif not text:
                reason = "empty caption"
            else:
                texts[referent_id] = text
                continue
            removed[index].add(referent_id)
            out.rejects.append(Reject(records[index].image_id, self.name, reason, referent_id))
        for record, gone in zip(records, removed):
            record = without_referents(record, gone)
            record = replace(record, referents=[{**r, "sentences": [texts[r["referent_id"]]]} for r in record.referents])
            if not record.referents:
                out.rejects.append(Reject(record.image_id, self.name, "no referent left"))
                continue
            out.records.append(record)
        return out
