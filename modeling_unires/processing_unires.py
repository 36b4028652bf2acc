"""Processor for UniRES: the image processor plus the CLIP tokenizer, for images, expressions and ground-truth masks."""

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .configuration_unires import DEFAULT_MASK_THRESHOLD
from .image_processing_unires import UniRESImageProcessor, to_mask_array

logger = logging.get_logger(__name__)

DEFAULT_TEXT_MAX_LENGTH = 17


def _check_expression(expression, name: str) -> str:
    if not isinstance(expression, str):
        raise ValueError(f"{name} is a {type(expression).__name__}, not a string: {expression!r}")
    if not expression.strip():
        raise ValueError(f"{name} is empty or whitespace-only: {expression!r}")
    return expression


def validate_expressions(text) -> list[str]:
    """One expression or a list of them, as a list; `ValueError` names an empty, blank or non-string expression."""
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)):
        raise ValueError(f"text must be a string or a list of strings, got {type(text).__name__}")
    if len(texts) == 0:
        raise ValueError("text is an empty list: give at least one expression")
    return [_check_expression(expression, f"expression {index}") for index, expression in enumerate(texts)]


def flatten_expressions(text) -> tuple[list[str], list[int] | None]:
    """
    `(expressions, counts)` of the processor's `text`: a string or a flat list of strings gives `counts=None`; a list
    with one entry per image (each a string or a list of strings, e.g. `[["the dog", "its ear"], ["the car"]]`) gives
    the expressions in order and how many belong to each image. An image may have no expression, the whole batch
    may not. `ValueError` names a bad expression by image and position.
    """
    if not (isinstance(text, (list, tuple)) and any(isinstance(entry, (list, tuple)) for entry in text)):
        return validate_expressions(text), None
    expressions, counts = [], []
    for image_index, entry in enumerate(text):
        entry = [entry] if isinstance(entry, str) else entry
        if not isinstance(entry, (list, tuple)):
            raise ValueError(
                f"text entry {image_index} is a {type(entry).__name__}: with one entry per image, each must be a "
                "string or a list of strings"
            )
        for index, expression in enumerate(entry):
            expressions.append(_check_expression(expression, f"image {image_index}, expression {index}"))
        counts.append(len(entry))
    if not expressions:
        raise ValueError("text holds no expression: give at least one")
    return expressions, counts


class UniRESProcessor(ProcessorMixin):
    r"""
    Wraps a [`UniRESImageProcessor`] and a CLIP tokenizer: images and expressions in, model inputs out.

    - `processor(images=[img1, img2], text=[["the dog", "its ear"], ["the car"]])`: a list of expressions per
      image (a string counts as one). Each image is one `pixel_values` row, encoded once by the model for all of
      its expressions; `image_indices` gives the image of each expression.
    - `processor(images=image, text=[...])`: one image with many expressions.
    - `processor(images=[...], text=[...])`: parallel flat lists, one expression per image (equal lengths).
    - `masks=`: one ground-truth mask per expression, each the size of its image, in the shape of `text` (a list
      per image, or a flat list); returned as `labels`, resized to the model input (nearest) as float 0/1.

    With images and text, the output holds `pixel_values`, `original_sizes` (one (height, width) per image),
    `input_ids`, `attention_mask` and `image_indices`, plus `labels` with masks: `model(**inputs)` takes it as is,
    and `post_process_masks(logits, inputs["original_sizes"], image_indices=inputs["image_indices"], texts=...)`
    turns the logits into masks at each image's size.

    Expressions are padded and truncated to `text_max_length` tokens (start and end included); a truncated
    expression is logged as a warning.
    """

    def __init__(self, image_processor=None, tokenizer=None, text_max_length=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)
        if text_max_length is None:
            model_max = getattr(tokenizer, "model_max_length", None)
            text_max_length = model_max if isinstance(model_max, int) and model_max <= 512 else DEFAULT_TEXT_MAX_LENGTH
        self.text_max_length = int(text_max_length)

    def __call__(self, images=None, text=None, masks=None, return_tensors="pt", **kwargs) -> BatchFeature:
        """
        Returns a `BatchFeature` with `pixel_values` and `original_sizes` (when images are given), `input_ids` and
        `attention_mask` (when text is given), `image_indices` (the image of each expression, when both are given,
        or when text is given as one list per image) and `labels` (when masks are given).
        """
        if images is None and text is None:
            raise ValueError("Give `images`, `text` or both")
        if kwargs:
            raise ValueError(f"Unknown arguments for UniRESProcessor: {sorted(kwargs)}")
        data = {}
        texts = counts = image_indices = None
        if text is not None:
            texts, counts = flatten_expressions(text)
            data.update(self.tokenize(texts, return_tensors=return_tensors))
        pil_images = None
        if images is not None:
            pil_images = self.image_processor.prepare_images(images)
        if counts is not None:
            if pil_images is not None and len(pil_images) != len(counts):
                raise ValueError(
                    f"Got {len(pil_images)} images and {len(counts)} lists of expressions: give one list of "
                    "expressions (a string or a list of strings) per image"
                )
            image_indices = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        elif texts is not None and pil_images is not None:
            if len(pil_images) == 1:
                image_indices = np.zeros(len(texts), dtype=np.int64)
            elif len(pil_images) == len(texts):
                image_indices = np.arange(len(texts), dtype=np.int64)
            else:
                raise ValueError(
                    f"Got {len(pil_images)} images and {len(texts)} expressions: give one image with any number of "
                    "expressions, parallel lists of equal length, or one list of expressions per image"
                )
        if pil_images is not None:
            data.update(self.image_processor.preprocess_prepared(pil_images, return_tensors=return_tensors))
        if masks is not None:
            if pil_images is None or texts is None:
                raise ValueError("`masks` need both `images` and `text` (one mask per expression)")
            mask_list = self._flatten_masks(masks, counts)
            if len(mask_list) != len(texts):
                raise ValueError(f"Got {len(mask_list)} masks for {len(texts)} expressions: give one per expression")
            arrays = []
            for index, (mask, image_index) in enumerate(zip(mask_list, image_indices.tolist())):
                array = to_mask_array(mask, index)
                image = pil_images[image_index]
                if array.shape != (image.height, image.width):
                    raise ValueError(
                        f"mask {index} has size {array.shape} (height, width) but its image {image_index} is "
                        f"{(image.height, image.width)}"
                    )
                arrays.append(array)
            data["labels"] = self.image_processor.preprocess_masks(arrays, return_tensors=None)
        if image_indices is not None:
            data["image_indices"] = image_indices
        return BatchFeature(data=data, tensor_type=return_tensors)

    @staticmethod
    def _flatten_masks(masks, counts) -> list:
        """Masks in the shape of `text`: a list per image when `counts` is given (a flat list is accepted too)."""
        if not isinstance(masks, (list, tuple)):
            return [masks]
        if counts is not None and len(masks) == len(counts) and all(isinstance(m, (list, tuple)) for m in masks):
            for image_index, (entry, count) in enumerate(zip(masks, counts)):
                if len(entry) != count:
                    raise ValueError(
                        f"image {image_index} has {count} expressions but {len(entry)} masks: give one per expression"
                    )
            return [mask for entry in masks for mask in entry]
        return list(masks)

    @classmethod
    def from_clip(cls, name_or_path, config=None, **kwargs) -> "UniRESProcessor":
        """
        A processor for a model built with `UniRESModel.from_clip`: the CLIP checkpoint's tokenizer and
        normalisation, resizing to `config.image_size` (default: the checkpoint's), `config.text_max_length` tokens.
        `kwargs` go to the `from_pretrained` calls (`revision`, `cache_dir`, ...).
        """
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **kwargs)
        try:
            clip_image_processor = AutoImageProcessor.from_pretrained(name_or_path, **kwargs)
            mean, std = clip_image_processor.image_mean, clip_image_processor.image_std
        except (OSError, ValueError):
            mean = std = None  # no preprocessor config in the checkpoint: CLIP's defaults
        if config is None:
            clip_config = AutoConfig.from_pretrained(name_or_path, **kwargs)
            image_size, text_max_length, threshold = clip_config.vision_config.image_size, None, DEFAULT_MASK_THRESHOLD
        else:
            image_size, text_max_length, threshold = config.image_size, config.text_max_length, config.mask_threshold
        image_processor = UniRESImageProcessor(
            size=image_size, image_mean=mean, image_std=std, mask_threshold=threshold
        )
        return cls(image_processor, tokenizer, text_max_length=text_max_length or DEFAULT_TEXT_MAX_LENGTH)

    def tokenize(self, texts, return_tensors="pt"):
        """Pad/truncate to `text_max_length`; warn about every expression that had to be truncated."""
        max_length = self.text_max_length
        if getattr(self.tokenizer, "is_fast", False):
            return self._tokenize_fast(texts, return_tensors)
        # verbose=False: counting tokens must not trigger the tokenizer's "indexing errors" warning, since the
        # encoding below truncates; the warning of our own names the expression instead.
        full = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        for index, ids in enumerate(full):
            if len(ids) > max_length:
                self._warn_truncated(texts, index, len(ids))
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=max_length, return_tensors=return_tensors
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def _tokenize_fast(self, texts, return_tensors):
        """
        One tokenizer call for the whole batch: with `return_overflowing_tokens`, a fast tokenizer gives each
        expression's truncated encoding first, followed by one more row per `max_length` chunk it overflowed into,
        so the truncated expressions are found without tokenizing everything twice.
        """
        max_length = self.text_max_length
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=max_length, return_overflowing_tokens=True
        )
        owners = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int64)
        input_ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        attention_mask = np.asarray(encoded["attention_mask"], dtype=np.int64)
        first = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
        if len(first) < len(owners):
            # Each row holds its share of the expression's tokens plus the special (start and end) tokens.
            special = self.tokenizer.num_special_tokens_to_add(pair=False)
            content = np.bincount(owners, weights=attention_mask.sum(1) - special, minlength=len(texts))
            for index in np.flatnonzero(np.bincount(owners, minlength=len(texts)) > 1):
                self._warn_truncated(texts, int(index), int(content[index]) + special)
        data = {"input_ids": input_ids[first], "attention_mask": attention_mask[first]}
        if return_tensors is None:
            return {name: value.tolist() for name, value in data.items()}
        return dict(BatchFeature(data=data, tensor_type=return_tensors))

    def _warn_truncated(self, texts, index, num_tokens):
        logger.warning(
            f"expression {index} ({texts[index]!r}) has {num_tokens} tokens and is truncated to {self.text_max_length}"
        )

    def post_process_masks(
        self,
        logits,
        original_sizes,
        threshold=None,
        return_rle=False,
        return_scores=False,
        image_indices=None,
        texts=None,
    ):
        """See [`UniRESImageProcessor.post_process_masks`]: boolean masks (or COCO RLE) at each original size."""
        return self.image_processor.post_process_masks(
            logits,
            original_sizes,
            threshold=threshold,
            return_rle=return_rle,
            return_scores=return_scores,
            image_indices=image_indices,
            texts=texts,
        )

    def preprocess_masks(self, masks, return_tensors="pt"):
        """See [`UniRESImageProcessor.preprocess_masks`]."""
        return self.image_processor.preprocess_masks(masks, return_tensors=return_tensors)

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = ["UniRESProcessor", "flatten_expressions", "validate_expressions"]
