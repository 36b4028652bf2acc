"""UniRES: a thin caller of the one inference path (processor → model → post_process_masks).

The processor gives one pixel row per image and `image_indices` for the expressions, the model encodes each image
once for all of its expressions, `post_process_masks` resizes the logits bilinearly to the size asked for and applies
`sigmoid > threshold` (the config's `mask_threshold`, 0.35, unless given). NaN logits raise, naming the expressions.

On a CPU the model runs with its inference forwards (`modeling_unires.fast_inference_unires`, as the pipeline and the
app do: masks bit-equal to the plain model's, expressions in passes so that memory stays bounded), switched on for
each call and off after it, so that a model being trained or saved is left as it was given; `fast_inference=False`
keeps the plain forwards, `True` uses the fast ones on any device.

`from_pretrained` also takes a LoRA adapter (a folder or Hub id holding peft's adapter_config.json, as `examples/train.py
--finetune lora` saves it): the base model it names is loaded, the adapter applied and merged (`merge_and_unload`), so
that the evaluator runs a plain `UniRESModel` (`load_unires_model`).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch

from modeling_unires.fast_inference_unires import (
    disable_fast_inference,
    enable_fast_inference,
    is_fast_inference_enabled,
)

from .base import Segmenter, default_device

# What `PeftModel.save_pretrained` writes: a folder holding them is a LoRA adapter, not a full model.
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_FILES = (ADAPTER_CONFIG_FILE, "adapter_model.safetensors")


def is_peft_model(model) -> bool:
    """Whether `model` is a peft `PeftModel` (a LoRA run's model before merging)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def adapter_config_file(name_or_path: str, **hub_kwargs) -> Optional[str]:
    """The adapter_config.json of a folder or Hub repo holding a peft adapter, or None for a full model."""
    from transformers.utils import find_adapter_config_file

    return find_adapter_config_file(name_or_path, **hub_kwargs)


def load_unires_model(name_or_path: str, *, base_model: Optional[str] = None, trust_remote_code: bool = False,
                      merge: bool = True):
    """`(model, processor)` of a UniRES checkpoint or of a LoRA adapter trained on one.

    For an adapter, the base named in its adapter_config.json (`base_model_name_or_path`, or `base_model` when
    given) is loaded, the adapter applied with `PeftModel.from_pretrained` and, with `merge=True`, folded in
    (`merge_and_unload`: a plain `UniRESModel`, as fast as the base). The processor saved beside the adapter is used
    when there is one, else the base's.
    """
    import json

    from transformers import AutoModel, AutoProcessor

    import modeling_unires  # noqa: F401  (registers the Auto classes)

    config_file = adapter_config_file(name_or_path)
    if config_file is None:
        model = AutoModel.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        return model, AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    try:
        from peft import PeftModel
    except ImportError as error:
        raise ImportError(f"{name_or_path} is a LoRA adapter (it has {ADAPTER_CONFIG_FILE}); loading it needs peft: "
                          "pip install 'unires[finetune]'") from error
    with open(config_file, encoding="utf-8") as handle:
        base = base_model or json.load(handle).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{name_or_path} is a LoRA adapter whose {ADAPTER_CONFIG_FILE} names no base model "
                         "(base_model_name_or_path): pass the base checkpoint")
    try:
        model = AutoModel.from_pretrained(base, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise OSError(f"{name_or_path} is a LoRA adapter on the base model {base!r}, which could not be loaded: "
                      f"{error}") from error
    try:
        processor = AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # an adapter saved without its processor
        processor = AutoProcessor.from_pretrained(base, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(model, name_or_path)
    return (model.merge_and_unload() if merge else model), processor


class UniRESSegmenter(Segmenter):
    """A UniRES model and its processor as a [`Segmenter`]."""

    model_type = "unires"
    shares_image_encoding = True

    def __init__(self, model, processor, threshold: Optional[float] = None, fast_inference: Optional[bool] = None):
        if fast_inference not in (None, True, False):
            raise ValueError(f"fast_inference={fast_inference!r} is invalid: expected True, False or None (on a CPU)")
        self.model = model
        self.processor = processor
        self.threshold = float(model.config.mask_threshold if threshold is None else threshold)
        self.input_size = int(model.config.image_size)
        self.fast_inference = fast_inference

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: Optional[str] = None, threshold: Optional[float] = None,
                        trust_remote_code: bool = False, fast_inference: Optional[bool] = None):
        model, processor = load_unires_model(name_or_path, trust_remote_code=trust_remote_code)
        return cls(model.to(device or default_device()).eval(), processor, threshold=threshold,
                   fast_inference=fast_inference)

    @contextmanager
    def _forwards(self, device: torch.device):
        """The fast forwards for this call (on a CPU unless asked otherwise); the model is given back as it came."""
        wanted = device.type == "cpu" if self.fast_inference is None else self.fast_inference
        if not wanted or is_fast_inference_enabled(self.model) or type(self.model).__name__ != "UniRESModel":
            yield  # plain as asked, already fast as the caller set it, or a model of another class (remote code)
            return
        enable_fast_inference(self.model)
        try:
            yield
        finally:
            disable_fast_inference(self.model)

    @torch.no_grad()
    def segment(self, images, expressions, sizes=None):
        flat_texts = [text for texts in expressions for text in texts]
        device = self.model.device  # a PreTrainedModel's, or where an ONNX Runtime model returns its outputs
        inputs = self.processor(images=list(images), text=[list(t) for t in expressions])
        original_sizes = inputs.pop("original_sizes")
        sizes = original_sizes.tolist() if sizes is None else [tuple(s) for s in sizes]
        with self._forwards(device):
            logits = self.model(**{name: value.to(device) for name, value in inputs.items()}).logits
        masks = self.processor.post_process_masks(
            logits.float().cpu(), sizes, image_indices=inputs["image_indices"], texts=flat_texts,
            threshold=self.threshold,
        )
        out, cursor = [], 0
        for texts in expressions:
            out.append(masks[cursor : cursor + len(texts)])
            cursor += len(texts)
        return out

    def conventions(self) -> dict:
        return {**super().conventions(), "model_class": type(self.model).__name__,
                "resizing": f"logits at {self.input_size}x{self.input_size} resized bilinearly to the compared size, "
                            "then sigmoid > threshold (post_process_masks)"}
