"""A plain Python callable as a [`Segmenter`]: for models that live outside transformers (LISA-style repositories).

    python examples/evaluate_model.py --model_type callable:my_wrapper:segment --dataset ... --split val

`my_wrapper` is an importable module or a path to a `.py` file; `segment` is called once per image::

    def segment(image, expressions):
        '''image: an RGB PIL image; expressions: list[str]. Returns one (height, width) array per expression, at the
        image's original size: bool masks, or float probabilities in [0, 1] (thresholded at --threshold, 0.35).'''

A few lines wrap a model (load it once, at import or lazily)::

    import functools, numpy as np, torch
    from my_repo import load_model, predict        # whatever the repository offers

    @functools.cache
    def _model():
        return load_model("path/to/checkpoint").eval()

    def segment(image, expressions):
        with torch.no_grad():
            return [np.asarray(predict(_model(), image, text)) > 0 for text in expressions]

A callable that encodes an image once for all of its expressions does so inside; one that batches several images
sets `segment.batched = True` and is then called as `segment(images, expressions_per_image)`, returning one list of
masks per image, in order. A mask is a numpy array or a torch tensor of any dtype (bfloat16 and float16 included,
read in float32) and grad state (detached). Refused, each naming the image and the expression: an answer of `None`,
more or fewer lists than images or masks than expressions, and masks of another size (never resized silently).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Callable, Optional

import numpy as np
import torch

from .base import Segmenter, resize_mask, rgb

DEFAULT_CALLABLE_THRESHOLD = 0.35


def load_callable(spec: str) -> Callable:
    """`"module:function"` (a dotted module, or a path to a .py file, then `:` and an attribute path)."""
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"callable {spec!r}: expected 'module:function' (e.g. my_wrapper:segment or "
                         "path/to/wrapper.py:segment)")
    if module_name.endswith(".py") or os.sep in module_name:
        if not os.path.isfile(module_name):
            raise ValueError(f"callable {spec!r}: no such file {module_name!r}")
        name = "_mres_callable_" + os.path.splitext(os.path.basename(module_name))[0]
        module_spec = importlib.util.spec_from_file_location(name, module_name)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` would: a wrapper beside the command is importable
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise ValueError(f"callable {spec!r}: cannot import {module_name!r}: {error}") from error
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ValueError(f"callable {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"callable {spec!r}: {attribute!r} is a {type(target).__name__}, not a callable")
    return target


class CallableSegmenter(Segmenter):
    model_type = "callable"

    def __init__(self, fn: Callable, threshold: Optional[float] = None, name: Optional[str] = None,
                 input_size: Optional[int] = None):
        self.fn = fn
        self.name = name or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
        self.threshold = float(DEFAULT_CALLABLE_THRESHOLD if threshold is None else threshold)
        self.batched = bool(getattr(fn, "batched", False))
        self.input_size = input_size

    @classmethod
    def from_spec(cls, spec: str, threshold: Optional[float] = None):
        return cls(load_callable(spec), threshold=threshold, name=spec)

    def segment(self, images, expressions, sizes=None):
        images = [rgb(image) for image in images]
        expressions = [list(texts) for texts in expressions]
        outputs = self._call(images, expressions)
        resized = []
        for index, (image, texts, maps, size) in enumerate(zip(images, expressions, outputs, sizes)):
            original = (image.height, image.width)
            image_maps = []
            for text, value in zip(texts, self._masks_of_image(maps, index, texts)):
                where = f"image {index}, expression {text!r}"
                array = self._array(value, where)
                if array.shape != original:
                    raise ValueError(f"callable {self.name}: {where}: mask of shape {array.shape}, expected the "
                                     f"image's original size {original} (height, width)")
                if tuple(size) != original:  # resolution="input": threshold first, then nearest-neighbour
                    array = resize_mask(self._to_mask(array, original, where), size)
                image_maps.append(array)
            resized.append(image_maps)
        return resized

    def _call(self, images, expressions) -> list:
        """The callable's answer: one entry per image (a batched callable's list is checked against the images)."""
        if not self.batched:
            return [self._checked_call(image, texts, f"image {index}") if texts else []
                    for index, (image, texts) in enumerate(zip(images, expressions))]
        outputs = self._checked_call(images, expressions, f"images 0-{len(images) - 1}")
        outputs = list(outputs)
        if len(outputs) != len(images):
            raise ValueError(f"callable {self.name}: returned {len(outputs)} lists of masks for {len(images)} images "
                             f"(expressions {expressions}); return one list per image, in order")
        return outputs

    def _checked_call(self, images, texts, where: str):
        try:
            output = self.fn(images, texts)
        except Exception as error:  # the user's code failed: say on which input, keep its own error and traceback
            error.add_note(f"in callable {self.name}, called on {where} with expressions {texts}")
            raise
        if output is None or isinstance(output, (str, bytes)) or not hasattr(output, "__iter__"):
            raise ValueError(f"callable {self.name}: {where}, expressions {texts}: returned "
                             f"{'None' if output is None else type(output).__name__}, expected a list with one mask "
                             "per expression" + (" for each image" if self.batched else ""))
        return output

    def _masks_of_image(self, maps, index: int, texts) -> list:
        """One image's masks: a list as long as its expressions."""
        if maps is None or isinstance(maps, (str, bytes)) or not hasattr(maps, "__iter__"):
            raise ValueError(f"callable {self.name}: image {index}, expressions {texts}: returned "
                             f"{'None' if maps is None else type(maps).__name__}, expected one mask per expression")
        maps = list(maps)
        if len(maps) != len(texts):
            raise ValueError(f"callable {self.name}: image {index}: returned {len(maps)} masks for its {len(texts)} "
                             f"expressions {texts}")
        return maps

    def _array(self, value, where: str) -> np.ndarray:
        """A mask as numpy: torch tensors of any dtype and grad state are detached, bool kept, others float32."""
        if value is None:
            raise ValueError(f"callable {self.name}: {where}: returned None instead of a mask")
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            return value.numpy() if value.dtype == torch.bool else value.float().numpy()
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as error:
            raise ValueError(f"callable {self.name}: {where}: not an array ({type(value).__name__}): {error}") from None
        if array.dtype == object:
            raise ValueError(f"callable {self.name}: {where}: not a numeric mask ({type(value).__name__} of objects)")
        return array

    def conventions(self) -> dict:
        return {**super().conventions(), "callable": self.name, "batched": self.batched,
                "resizing": "the callable's masks at the original size (nearest-neighbour to another compared size)"}
