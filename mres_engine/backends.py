"""What the stages share: the one lazy model loader, the SAM box segmenters, and the chat clients.

- :class:`LazyModel`: a model and its processor loaded on first use (building a stage stays cheap,
  e.g. in a datatrove launcher process), or ready-made objects (tests pass tiny ones); every
  stage and backend loads its weights through it.
- SAM with box prompts behind one small interface (:class:`BoxSegmenter`), used by the object-mask
  stage and, on the same image encoding, by the part-mask stage: the ``segment_anything`` package,
  the paper's model (default; a ``.pth`` checkpoint, batched boxes through
  ``SamPredictor.predict_torch``), and transformers' ``SamModel`` / ``Sam2Model`` by Hub id. Each
  mask comes with SAM's predicted IoU and its stability score (the IoU of the masks thresholded at
  logit +offset and -offset, as SA-1B computes it).
- Chat clients (:class:`ChatClient`): any OpenAI-compatible endpoint (:class:`OpenAIChatClient`,
  used by the part vocabulary and the served captioner) and a local transformers causal LM
  (:class:`LocalChatModel`).
"""

from __future__ import annotations

import inspect
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch

from .options import DEFAULT_PART_LLM, StageOptions, resolve_device


class LazyModel:
    """A model and its processor (or tokenizer), loaded on the first :meth:`get` and kept: the engine's one lazy loader.

    Args:
        load: ``load() -> (model, processor)``, called once on first use when no ``model`` is given
            (:meth:`from_pretrained` makes one for transformers classes).
        model, processor: ready-made objects, used as given (tests pass tiny ones).
        device: where the model is moved on first use (None: left where it is). A model with an
            ``eval`` method is put in eval mode.
    """

    def __init__(self, load: Optional[Callable[[], tuple[Any, Any]]] = None, model=None, processor=None,
                 device: Optional[str] = None):
        if load is None and model is None:
            raise ValueError("LazyModel needs a model or a function that loads one")
        self._load_fn = load
        self.model, self.processor = model, processor
        self.device = device
        self._ready = False

    @classmethod
    def from_pretrained(cls, model_class: str, processor_class: Optional[str], model_id: str, *, device: Optional[str] = None,
                        model=None, processor=None, **kwargs) -> "LazyModel":
        """``transformers.<model_class>.from_pretrained(model_id, **kwargs)`` and ``<processor_class>``'s (unless
        ``processor`` is given), looked up by name on first use so that nothing is imported before."""

        def load():
            import transformers

            loaded = getattr(transformers, model_class).from_pretrained(model_id, **kwargs)
            if processor is None and processor_class is not None:
                return loaded, getattr(transformers, processor_class).from_pretrained(model_id)
            return loaded, processor

        return cls(load, model=model, processor=processor, device=device)

    def get(self) -> tuple[Any, Any]:
        """``(model, processor)``, loading and placing them the first time."""
        if not self._ready:
            if self.model is None:
                self.model, self.processor = self._load_fn()
            if self.device is not None:
                self.model = self.model.to(self.device)
            if callable(getattr(self.model, "eval", None)):
                self.model.eval()
            self._ready = True
        return self.model, self.processor


# -- SAM with box prompts --------------------------------------------------------------------------

def _rgb(image):
    """SAM's input pixels: the one image→RGB rule (``to_rgb_image``), so that an image given straight to a segmenter
    (not through ``LoadImages``, whose images are RGB by that rule already) gets them too. Without the EXIF turn:
    the boxes are in the frame of the pixels given."""
    from modeling_unires.image_processing_unires import to_rgb_image  # transformers' image utilities: seconds

    return to_rgb_image(image, exif_transpose=False)


@dataclass
class BoxMasks:
    """Masks for N boxes of one image: ``masks`` bool (N, H, W); ``iou``, ``stability`` float (N,)."""

    masks: np.ndarray
    iou: np.ndarray
    stability: np.ndarray


class BoxSegmenter(Protocol):
    """Box-prompted segmentation; ``encode`` once per image, ``segment`` any number of times."""

    def encode(self, image) -> Any: ...

    def segment(self, image, embedding: Any, boxes_xyxy: np.ndarray) -> BoxMasks: ...


def stability_score(logits: torch.Tensor, mask_threshold: float, offset: float) -> torch.Tensor:
    """SA-1B's stability score of mask logits (..., H, W), from ``segment_anything``'s implementation."""
    from segment_anything.utils.amg import calculate_stability_score

    return calculate_stability_score(logits.float(), mask_threshold, offset)


def xywh_to_xyxy(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _empty(height: int, width: int) -> BoxMasks:
    return BoxMasks(np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.float32))


class SegmentAnythingSegmenter:
    """SAM from the ``segment_anything`` package.

    Args:
        model: a built ``segment_anything.modeling.Sam`` (tests pass a tiny one); or None to
            build ``model_type`` and load ``checkpoint`` on first use.
        model_type: ``vit_h`` (the paper's), ``vit_l`` or ``vit_b``.
        checkpoint: the ``.pth`` (loaded with ``weights_only=True``) or ``.safetensors`` state dict.
        device: where the model runs.
        box_batch_size: boxes decoded together (bounds the (N, H, W) logits in memory).
        stability_offset: logit offset of the stability score.
    """

    def __init__(self, model=None, model_type: str = "vit_h", checkpoint: str | None = None, device: str = "cpu",
                 box_batch_size: int = 64, stability_offset: float = 1.0):
        self.model_type = model_type
        self.checkpoint = checkpoint
        self.device = device
        self.box_batch_size = box_batch_size
        self.stability_offset = stability_offset
        self.sam = LazyModel(self._build, model=model, device=device)
        self._predictor = None

    @property
    def predictor(self):
        if self._predictor is None:
            from segment_anything import SamPredictor

            self._predictor = SamPredictor(self.sam.get()[0])
        return self._predictor

    def _build(self):
        from segment_anything import sam_model_registry

        if self.checkpoint is None:
            raise ValueError(
                "The segment_anything backend needs --sam_checkpoint: a SAM .pth such as sam_vit_h_4b8939.pth from "
                "https://github.com/facebookresearch/segment-anything#model-checkpoints (or use --sam_backend transformers)."
            )
        if not os.path.isfile(self.checkpoint):
            raise FileNotFoundError(f"SAM checkpoint not found: {self.checkpoint}")
        model = sam_model_registry[self.model_type]()
        if self.checkpoint.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(self.checkpoint)
        else:
            state_dict = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict)
        return model, None

    @torch.no_grad()
    def encode(self, image) -> dict:
        predictor = self.predictor
        predictor.set_image(np.asarray(_rgb(image)))
        return {"features": predictor.features, "original_size": predictor.original_size, "input_size": predictor.input_size}

    @torch.no_grad()
    def segment(self, image, embedding: dict | None, boxes_xyxy: np.ndarray) -> BoxMasks:
        predictor = self.predictor
        if embedding is None:
            embedding = self.encode(image)
        predictor.features = embedding["features"]
        predictor.original_size = embedding["original_size"]
        predictor.input_size = embedding["input_size"]
        predictor.is_image_set = True
        height, width = embedding["original_size"]
        if len(boxes_xyxy) == 0:
            return _empty(height, width)
        masks, ious, stabilities = [], [], []
        threshold = predictor.model.mask_threshold
        for start in range(0, len(boxes_xyxy), self.box_batch_size):
            boxes = torch.as_tensor(boxes_xyxy[start : start + self.box_batch_size], dtype=torch.float32, device=predictor.device)
            boxes = predictor.transform.apply_boxes_torch(boxes, embedding["original_size"])
            logits, iou, _ = predictor.predict_torch(None, None, boxes=boxes, multimask_output=False, return_logits=True)
            logits = logits[:, 0]
            stabilities.append(stability_score(logits, threshold, self.stability_offset).cpu())
            masks.append((logits > threshold).cpu())
            ious.append(iou[:, 0].float().cpu())
        return BoxMasks(torch.cat(masks).numpy(), torch.cat(ious).numpy(), torch.cat(stabilities).numpy())


class TransformersSamSegmenter:
    """transformers ``SamModel`` or ``Sam2Model`` (with its processor) behind :class:`BoxSegmenter`.

    Args:
        model, processor: loaded objects (tests pass tiny ones); or None to load ``model_id``.
        model_id: Hub id or path (``facebook/sam-vit-huge``, ``facebook/sam2.1-hiera-large``, ...).
    """

    def __init__(self, model=None, processor=None, model_id: str = "facebook/sam-vit-huge", device: str = "cpu",
                 box_batch_size: int = 64, stability_offset: float = 1.0, mask_threshold: float = 0.0):
        self.model_id = model_id
        self.device = device
        self.box_batch_size = box_batch_size
        self.stability_offset = stability_offset
        self.mask_threshold = mask_threshold
        self.sam = LazyModel.from_pretrained("AutoModel", "AutoProcessor", model_id, device=device, model=model, processor=processor)

    def _inputs(self, image, boxes_xyxy=None):
        _, processor = self.sam.get()
        kwargs = {"input_boxes": [boxes_xyxy.tolist()]} if boxes_xyxy is not None else {}
        return processor(images=_rgb(image), return_tensors="pt", **kwargs)

    @torch.no_grad()
    def encode(self, image):
        model, _ = self.sam.get()
        pixel_values = self._inputs(image)["pixel_values"].to(self.device, model.dtype)
        return model.get_image_embeddings(pixel_values)

    def _post_process(self, pred_masks, inputs):
        _, processor = self.sam.get()
        kwargs = {"binarize": False}
        # SamImageProcessor needs the resized size to undo padding; Sam2's does not take it.
        if "reshaped_input_sizes" in inspect.signature(processor.image_processor.post_process_masks).parameters:
            kwargs["reshaped_input_sizes"] = inputs["reshaped_input_sizes"]
        return processor.post_process_masks(pred_masks.float().cpu(), inputs["original_sizes"], **kwargs)[0]

    @torch.no_grad()
    def segment(self, image, embedding, boxes_xyxy: np.ndarray) -> BoxMasks:
        model, _ = self.sam.get()
        if len(boxes_xyxy) == 0:
            return _empty(image.height, image.width)
        if embedding is None:
            embedding = self.encode(image)
        masks, ious, stabilities = [], [], []
        for start in range(0, len(boxes_xyxy), self.box_batch_size):
            inputs = self._inputs(image, boxes_xyxy[start : start + self.box_batch_size])
            outputs = model(image_embeddings=embedding, input_boxes=inputs["input_boxes"].to(self.device, model.dtype),
                            multimask_output=False)
            logits = self._post_process(outputs.pred_masks, inputs)[:, 0]  # (boxes, H, W)
            stabilities.append(stability_score(logits, self.mask_threshold, self.stability_offset))
            masks.append(logits > self.mask_threshold)
            ious.append(outputs.iou_scores[0, :, 0].float().cpu())
        return BoxMasks(torch.cat(masks).numpy(), torch.cat(ious).numpy(), torch.cat(stabilities).numpy())


def build_segmenter(options: StageOptions) -> BoxSegmenter:
    device = resolve_device(options.device)
    common = {"device": device, "box_batch_size": options.sam_box_batch_size, "stability_offset": options.sam_stability_offset}
    if options.sam_backend == "segment_anything":
        return SegmentAnythingSegmenter(model_type=options.sam_model_type, checkpoint=options.sam_checkpoint, **common)
    if options.sam_backend == "transformers":
        return TransformersSamSegmenter(model_id=options.sam_model, **common)
    raise ValueError(f"Unknown sam_backend {options.sam_backend!r}: use 'segment_anything' or 'transformers'.")


def sam_reject_reason(iou: float, stability: float, min_iou: float, min_stability: float, empty: bool) -> str | None:
    """Why a SAM mask is not kept, or None when it is."""
    if empty:
        return "empty mask"
    if iou < min_iou:
        return f"SAM predicted IoU below threshold: {iou:.3f} < {min_iou}"
    if stability < min_stability:
        return f"SAM stability score below threshold: {stability:.3f} < {min_stability}"
    return None

# -- chat clients ----------------------------------------------------------------------------------


class ChatClient(Protocol):
    """Anything that answers a chat (a list of ``{"role", "content"}`` messages) with text."""

    model_name: str

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = 256) -> str: ...


class OpenAIChatClient:
    """A client for the ``/chat/completions`` route of any OpenAI-compatible server (vLLM, TGI, ...).

    Args:
        base_url: e.g. ``http://localhost:8000/v1``.
        model: the model name sent with every request.
        api_key: sent as a Bearer token when given.
        timeout: seconds per request.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0):
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.api_key = api_key
        self.timeout = timeout

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = 256) -> str:
        return self.complete(messages, max_tokens)[0]

    def complete(self, messages: list[dict[str, Any]], max_tokens: int = 256) -> tuple[str, str | None]:
        """The answer and its ``finish_reason`` (``"length"`` when cut at ``max_tokens``; None if not given)."""
        body = json.dumps({"model": self.model_name, "messages": messages, "temperature": 0, "max_tokens": max_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(f"{self.base_url}/chat/completions", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.loads(response.read())
        except urllib.error.URLError as err:
            raise ConnectionError(f"chat endpoint {self.base_url}: {err}") from err
        try:
            choice = reply["choices"][0]
            return choice["message"]["content"] or "", choice.get("finish_reason")
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"chat endpoint {self.base_url}: unexpected reply {reply!r:.200}") from None


class LocalChatModel:
    """A transformers causal LM answering chats greedily (its chat template when it has one).

    Args:
        model, tokenizer: loaded objects (tests pass tiny ones); or None to load ``model_id``.
        model_id: Hub id or path, also the cache key.
    """

    def __init__(self, model=None, tokenizer=None, model_id: str = DEFAULT_PART_LLM, device: str = "cpu", dtype=None):
        self.model_name = model_id
        self.device = device
        self.dtype = dtype
        self.llm = LazyModel.from_pretrained("AutoModelForCausalLM", "AutoTokenizer", model_id, device=device, model=model,
                                             processor=tokenizer, dtype=dtype)

    def chat(self, messages: list[dict[str, Any]], max_tokens: int = 256) -> str:
        import torch

        model, tokenizer = self.llm.get()
        if tokenizer.chat_template:
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        return tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
