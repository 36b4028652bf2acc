"""Processor for UniRES: the image processor plus the CLIP tokenizer, for images, expressions and ground-truth masks."""

import numpy as np
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .configuration_unires import DEFAULT_MASK_THRESHOLD
from .image_processing_unires import UniRESImageProcessor, to_mask_array

logger = logging.get_logger(__name__)

DEFAULT_TEXT_MAX_LENGTH = 17


def validate_expressions(text) -> list[str]:
    """One expression or a list of them, as a list; `ValueError` names an empty, blank or non-string expression."""
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)):
        raise ValueError(f"text must be a string or a list of strings, got {type(text).__name__}")
    if len(texts) == 0:
        raise ValueError("text is an empty list: give at least one expression")
    for index, expression in enumerate(texts):
        if not isinstance(expression, str):
            raise ValueError(f"expression {index} is a {type(expression).__name__}, not a string: {expression!r}")
        if not expression.strip():
            raise ValueError(f"expression {index} is empty or whitespace-only: {expression!r}")
    return list(texts)


class UniRESProcessor(ProcessorMixin):
    r"""
    Wraps a [`UniRESImageProcessor`] and a CLIP tokenizer.

    - `processor(images=image, text=[...])`: one image with many expressions; `pixel_values` has one row and the
      model broadcasts it over the expressions (the image is encoded once).
    - `processor(images=[...], text=[...])`: parallel lists, one expression per image (equal lengths).
    - `masks=`: one ground-truth mask per expression, each the size of its image; returned as `labels`, resized to
      the model input (nearest) as float 0/1.

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
        `attention_mask` (when text is given) and `labels` (when masks are given).
        """
        if images is None and text is None:
            raise ValueError("Give `images`, `text` or both")
        if kwargs:
            raise ValueError(f"Unknown arguments for UniRESProcessor: {sorted(kwargs)}")
        data = {}
        texts = None
        if text is not None:
            texts = validate_expressions(text)
            data.update(self.tokenize(texts, return_tensors=return_tensors))
        pil_images = None
        if images is not None:
            pil_images = self.image_processor.prepare_images(images)
            if texts is not None and len(pil_images) not in (1, len(texts)):
                raise ValueError(
                    f"Got {len(pil_images)} images and {len(texts)} expressions: give one image with any number of "
                    "expressions, or parallel lists of equal length"
                )
            data.update(self.image_processor.preprocess(pil_images, return_tensors=return_tensors))
        if masks is not None:
            if pil_images is None or texts is None:
                raise ValueError("`masks` need both `images` and `text` (one mask per expression)")
            mask_list = [masks] if not isinstance(masks, (list, tuple)) else list(masks)
            if len(mask_list) != len(texts):
                raise ValueError(f"Got {len(mask_list)} masks for {len(texts)} expressions: give one per expression")
            arrays = []
            for index, mask in enumerate(mask_list):
                array = to_mask_array(mask, index)
                image = pil_images[0 if len(pil_images) == 1 else index]
                if array.shape != (image.height, image.width):
                    raise ValueError(
                        f"mask {index} has size {array.shape} (height, width) but its image is "
                        f"{(image.height, image.width)}"
                    )
                arrays.append(array)
            labels = self.image_processor.preprocess_masks(arrays, return_tensors=None)
            data["labels"] = labels
        return BatchFeature(data=data, tensor_type=return_tensors)

    def prepare_training_batch(self, images, texts, masks, image_indices, return_tensors="pt") -> BatchFeature:
        """
        A training batch where several expressions share one image: `images` (one per image), `texts` and `masks`
        (one per expression, each mask the size of its image) and `image_indices` (the image of each expression).

        Returns `pixel_values` (one row per image), `input_ids`, `attention_mask`, `labels` (float 0/1 at the model
        input, nearest-resized) and `image_indices`, ready for `UniRESModel(**batch)`.
        """
        texts = validate_expressions(texts)
        pil_images = self.image_processor.prepare_images(images)
        image_indices = [int(index) for index in image_indices]
        mask_list = list(masks)
        if not len(texts) == len(mask_list) == len(image_indices):
            raise ValueError(
                f"Got {len(texts)} expressions, {len(mask_list)} masks and {len(image_indices)} image_indices: "
                "give one of each per expression"
            )
        arrays = []
        for index, (mask, image_index) in enumerate(zip(mask_list, image_indices)):
            if not 0 <= image_index < len(pil_images):
                raise ValueError(f"image_indices[{index}]={image_index} is out of range for {len(pil_images)} images")
            array = to_mask_array(mask, index)
            image = pil_images[image_index]
            if array.shape != (image.height, image.width):
                raise ValueError(
                    f"mask {index} has size {array.shape} (height, width) but its image {image_index} is "
                    f"{(image.height, image.width)}"
                )
            arrays.append(array)
        data = dict(self.tokenize(texts, return_tensors=None))
        pixel = self.image_processor.preprocess(pil_images, return_tensors=None)
        data["pixel_values"] = pixel["pixel_values"]
        data["labels"] = self.image_processor.preprocess_masks(arrays, return_tensors=None)
        data["image_indices"] = np.asarray(image_indices, dtype=np.int64)
        return BatchFeature(data=data, tensor_type=return_tensors)

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

    def post_process_masks(self, logits, original_sizes, threshold=None, return_rle=False, return_scores=False):
        """See [`UniRESImageProcessor.post_process_masks`]: boolean masks (or COCO RLE) at each original size."""
        return self.image_processor.post_process_masks(
            logits, original_sizes, threshold=threshold, return_rle=return_rle, return_scores=return_scores
        )

    def preprocess_masks(self, masks, return_tensors="pt"):
        """See [`UniRESImageProcessor.preprocess_masks`]."""
        return self.image_processor.preprocess_masks(masks, return_tensors=return_tensors)

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids", "attention_mask"]


__all__ = ["UniRESProcessor", "validate_expressions"]
