"""Image processor for UniRES: square resize, CLIP normalisation, ground-truth masks in, boolean masks out.

Images of any PIL mode (L, LA, RGBA, P, CMYK, I;16, I, F, 1), EXIF-rotated JPEGs, numpy arrays (uint8, uint16,
bool, float in [0, 1]) and torch tensors are accepted, all turned into RGB by `to_rgb_image`, the one image→RGB rule
that the data engine, the captioner and the evaluator use too; paths, URLs and data URIs are opened by the pipeline
(`image_loading_unires.py`), as transformers' pipelines do. `post_process_masks` is the plain definition: resize the
logits bilinearly, then `sigmoid > threshold`; `UniRESImageProcessorFast` (`image_processing_unires_fast.py`) gives
the same masks faster on a CPU. This file imports only numpy, PIL, torch, transformers and the files beside it, so
that it can travel beside a checkpoint as remote code.
"""

import functools
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ChannelDimension,
    infer_channel_dimension_format,
)
from transformers.utils import logging

from .configuration_unires import DEFAULT_MASK_THRESHOLD

logger = logging.get_logger(__name__)

RESAMPLE_NAMES = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1}


# The 16-bit modes PIL opens (16-bit PNG and TIFF greyscale); "I" (32-bit) and "F" are read by their values.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
# Modes with an alpha band, composited on white. "P" and "PA" go through RGBA first: a palette may carry its
# transparency in `info["transparency"]` or in an RGBA palette, and `convert("RGBA")` reads both.
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb_image(image, index: int = 0, exif_transpose: bool = True) -> Image.Image:
    """
    The one image→RGB rule of UniRES (the processor, the data engine, the captioner and the evaluator use it):
    one image (PIL, numpy array or torch tensor) as an 8-bit RGB PIL image.

    - EXIF orientation: applied (`exif_transpose=False` for a caller that turns the pixels itself, as the engine
      does with the boxes); the result carries no EXIF, so applying the rule again never turns it twice.
    - Alpha (RGBA, LA, PA, palette with transparency): composited on white.
    - Palette, CMYK, greyscale (L, 1): PIL's conversion to RGB (CMYK without its ICC profile).
    - 16 bits (I;16 modes, uint16 arrays; I and integer arrays above 255): `round(v / 257)`, the nearest 8-bit level.
    - Floats (F, float arrays): [0, 1] scaled by 255, values above 1 read as [0, 255]; negative or NaN values raise.

    Raises `ValueError` naming `index` for an empty, unreadable or unconvertible image, and for an array with
    negative values (an already-normalised tensor is not an image).
    """
    if isinstance(image, (str, bytes, os.PathLike)):
        raise ValueError(
            f"image {index} is a path or URL ({image!r}): open it first (modeling_unires.image_loading_unires."
            "open_image reads paths, URLs and data URIs), or give it to the pipeline, which opens it"
        )
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
        if image.ndim == 3 and _tensor_is_channels_first(image):
            image = np.moveaxis(image, 0, -1)
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image, index)
    if not isinstance(image, Image.Image):
        raise ValueError(f"image {index} has unsupported type {type(image).__name__}: expected PIL, numpy or torch")
    if image.width == 0 or image.height == 0:
        raise ValueError(f"image {index} has a zero side: size (width, height) = {image.size}")
    if exif_transpose:
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or mode in ("I", "F"):
        image = _array_to_pil(np.asarray(image), index)
        mode = image.mode
    try:
        if mode in ("P", "PA"):
            image = image.convert("RGBA")
            mode = "RGBA"
        if mode in ALPHA_MODES:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba)
        rgb = image.convert("RGB")
    except ValueError as error:  # a mode PIL cannot turn into RGB
        raise ValueError(f"image {index} of mode {mode} cannot be converted to RGB: {error}") from error
    # Pixels only: an orientation tag left in `info` would turn the image again in a later `exif_transpose`
    # (`convert` and `transpose` copy `info`), so the rule stays idempotent. `convert` returned a new image.
    rgb.info = {}
    return rgb


def _tensor_is_channels_first(array: np.ndarray) -> bool:
    """
    transformers' own rule for a 3-D tensor (`infer_channel_dimension_format`), with 4 channels (RGBA) admitted: a
    leading 1, 3 or 4 means channels-first, even when the last side is 1, 3 or 4 too (`(3, 1, 1)` is one pixel, not
    a 3-pixel-high column; transformers logs the ambiguity). Numpy arrays stay channels-last, as PIL gives them.
    """
    try:
        return infer_channel_dimension_format(array, num_channels=(1, 3, 4)) == ChannelDimension.FIRST
    except ValueError:  # neither side is a channel count: `_array_to_pil` names the shape
        return False


def _array_to_pil(array: np.ndarray, index: int) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(f"image {index} is an array of shape {array.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image {index} has a zero side: shape {array.shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = _sixteen_to_eight_bits(array)
    elif np.issubdtype(array.dtype, np.floating):
        if np.isnan(array).any() or float(array.min(initial=0.0)) < 0.0:
            raise ValueError(
                f"image {index} is a float array with negative or NaN values (min {float(np.nanmin(array)):.3g}): it "
                "looks already normalised; pass pixels in [0, 1] or [0, 255], or call the model with pixel_values"
            )
        # Floats in [0, 1] (as torchvision gives them); values in [0, 255] are recognised by their range.
        scale = 255.0 if float(np.nanmax(array, initial=0.0)) <= 1.0 else 1.0
        array = np.clip(np.nan_to_num(array) * scale, 0, 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        # "I" images and integer arrays have no declared depth: values above 255 (up to 65535) are 16-bit ones.
        top = int(array.max(initial=0))
        array = _sixteen_to_eight_bits(array) if 255 < top <= 65535 else np.clip(array, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"image {index} has unsupported dtype {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array))


def _sixteen_to_eight_bits(array: np.ndarray) -> np.ndarray:
    """
    16-bit pixels (0..65535) as the nearest 8-bit level: `round(v * 255 / 65535)` = `round(v / 257)` =
    `(v + 128) // 257` (65535 = 255 * 257, and 257 is odd, so there is no tie), which keeps black 0 and white 255.

    Not PIL's `convert("L"/"RGB")` of an I;16 image: Pillow (12.x) clips it, so every value above 255 (nearly all
    of a 16-bit photo) turns white. Not the high byte `v >> 8` either: it floors `v / 256` and is one level off
    the nearest for a quarter of the values (129 gives 0, not 1; 65280 gives 255, not 254).
    """
    wide = np.clip(array.astype(np.int64), 0, 65535)
    return ((wide + 128) // 257).astype(np.uint8)


def to_mask_array(mask, index: int = 0) -> np.ndarray:
    """A ground-truth mask (PIL, numpy, torch; bool, 0/1 or 0/255) as a 2-D bool array; `ValueError` names `index`."""
    if isinstance(mask, Image.Image):
        mask = np.asarray(mask.convert("L") if mask.mode not in ("1", "L") else mask)
    elif isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"mask {index} has shape {mask.shape}: expected a 2-D (height, width) mask")
    if mask.shape[0] == 0 or mask.shape[1] == 0:
        raise ValueError(f"mask {index} has a zero side: shape {mask.shape}")
    if mask.dtype == np.bool_:
        return mask
    threshold = 127 if mask.max(initial=0) > 1 else 0.5
    return mask >= threshold


@functools.lru_cache(maxsize=64)
def nearest_source_indices(height: int, width: int, out_height: int, out_width: int) -> np.ndarray:
    """
    `(out_height, out_width)` flat indices of the `(height, width)` pixels that PIL's `resize(..., NEAREST)` picks.

    Read from PIL itself (an image of pixel indices, resized) rather than re-derived: its fixed-point coordinates
    differ from `torch.nn.functional.interpolate`'s "nearest" and "nearest-exact" at some sizes, and training labels
    must not depend on which path resized them. Read-only, cached per size pair.
    """
    flat = Image.fromarray(np.arange(height * width, dtype=np.int32).reshape(height, width), mode="I")
    indices = np.asarray(flat.resize((out_width, out_height), resample=Image.NEAREST)).copy()
    indices.flags.writeable = False
    return indices


class UniRESImageProcessor(BaseImageProcessor):
    r"""
    Image processor of UniRES.

    Args:
        size (`int` or `dict`, defaults to 224): the model's square input size (`config.image_size`); a dict
            `{"height": h, "width": w}` is accepted.
        resample (`str` or `int`, defaults to `"bicubic"`): PIL resampling filter for images.
        do_normalize (`bool`, defaults to `True`), image_mean / image_std: CLIP normalisation.
        mask_threshold (`float`, defaults to 0.35): default probability threshold of `post_process_masks`.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size=224,
        resample="bicubic",
        do_normalize=True,
        image_mean=None,
        image_std=None,
        mask_threshold=DEFAULT_MASK_THRESHOLD,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if not isinstance(size, dict) or set(size) != {"height", "width"} or min(size.values()) <= 0:
            raise ValueError(f"size={size!r} is invalid: expected an int or {{'height': h, 'width': w}}")
        if isinstance(resample, str) and resample not in RESAMPLE_NAMES:
            raise ValueError(f"resample={resample!r} is invalid: expected one of {sorted(RESAMPLE_NAMES)}")
        self.size = dict(size)
        self.resample = resample
        self.do_normalize = do_normalize
        self.image_mean = list(image_mean if image_mean is not None else OPENAI_CLIP_MEAN)
        self.image_std = list(image_std if image_std is not None else OPENAI_CLIP_STD)
        self.mask_threshold = mask_threshold

    # ----------------------------------------------------------------- images

    def _resample(self):
        return RESAMPLE_NAMES[self.resample] if isinstance(self.resample, str) else int(self.resample)

    def prepare_images(self, images) -> list[Image.Image]:
        """Flatten `images` (one image or a list) into RGB PIL images; `ValueError` names a bad one."""
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("images is an empty list")
            images = list(images)
        elif isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            images = list(images)
        else:
            images = [images]
        return [to_rgb_image(image, index) for index, image in enumerate(images)]

    def preprocess(self, images, return_tensors="pt", **kwargs) -> BatchFeature:
        """
        Resize to `size` (any input size, huge ones included), scale to [0, 1] and CLIP-normalise.

        Returns a `BatchFeature` with `pixel_values` `(num_images, 3, height, width)` and `original_sizes`
        `(num_images, 2)` as (height, width) of each image after EXIF rotation.
        """
        if kwargs:
            raise ValueError(f"Unknown arguments for UniRESImageProcessor.preprocess: {sorted(kwargs)}")
        return self.preprocess_prepared(self.prepare_images(images), return_tensors=return_tensors)

    def preprocess_prepared(self, pil_images: list, return_tensors="pt") -> BatchFeature:
        """[`preprocess`] of images already through [`prepare_images`] (RGB PIL images), so that a caller that
        needs them (the processor checks masks against their sizes) decodes and converts each image once."""
        height, width = self.size["height"], self.size["width"]
        mean = np.asarray(self.image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.image_std, dtype=np.float32)[:, None, None]
        arrays, sizes = [], []
        for image in pil_images:
            sizes.append((image.height, image.width))
            if image.size != (width, height):
                image = image.resize((width, height), resample=self._resample(), reducing_gap=3.0)
            array = np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0
            if self.do_normalize:
                array = (array - mean) / std
            arrays.append(array)
        data = {"pixel_values": np.stack(arrays), "original_sizes": np.asarray(sizes, dtype=np.int64)}
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ----------------------------------------------------------------- masks

    def preprocess_masks(self, masks, return_tensors="pt"):
        """
        Ground-truth masks (one or a list; PIL, numpy or torch; bool, 0/1 or 0/255) resized to the model input with
        nearest neighbour, as float 0/1, shape `(num_masks, height, width)` (torch unless `return_tensors=None`).

        PIL's nearest-neighbour choice of source pixels, applied to all masks of one size in one gather.
        """
        if not isinstance(masks, (list, tuple)) and not (hasattr(masks, "ndim") and masks.ndim == 3):
            masks = [masks]
        arrays = [to_mask_array(mask, index) for index, mask in enumerate(masks)]
        if not arrays:
            raise ValueError("masks is empty: give at least one mask")
        height, width = self.size["height"], self.size["width"]
        resized = np.empty((len(arrays), height, width), dtype=np.float32)
        indices_by_size = {}
        for index, array in enumerate(arrays):
            indices_by_size.setdefault(array.shape, []).append(index)
        for (mask_height, mask_width), indices in indices_by_size.items():
            stacked = np.stack([arrays[index] for index in indices])
            if (mask_height, mask_width) != (height, width):
                source = nearest_source_indices(mask_height, mask_width, height, width)
                stacked = stacked.reshape(len(indices), -1)[:, source]
            resized[indices] = stacked
        return torch.from_numpy(resized) if return_tensors == "pt" else resized

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
        """
        Turn mask logits `(num_masks, h, w)` into boolean masks at each original size: the one logits-to-mask path.

        `original_sizes` are (height, width) pairs: one per mask, or one for all masks, or, with `image_indices`
        (the image of each mask, as the processor returns them), one per image (the processor's `original_sizes`).
        The logits are resized bilinearly to the mask's size, then `sigmoid > threshold` (default
        `self.mask_threshold`, the config's). Masks of the same size are resized together. With `return_rle=True`,
        COCO RLE dicts `{"size": [h, w], "counts": str}` (pycocotools) are returned instead of arrays (made only then). With
        `return_scores=True`, `(masks, scores)` is returned, the score of a mask being its mean probability inside
        the mask, or for an empty mask the highest probability anywhere (so that a low score flags it).

        `image_indices` are integers (a list of ints, or an integer tensor or array); `original_sizes` a list of
        pairs, even for one (`[(h, w)]`). Infinite logits are read as ±`INFINITE_LOGIT` (1e4): +inf is a pixel of
        probability 1, -inf one of probability 0, so an all-+inf map is a full mask of score 1 and an all--inf map
        an empty one of score 0 (resized as they are, infinities would make NaN where they meet). NaN logits raise
        [`NaNLogitsError`] (a `ValueError`) naming the masks, and their expressions when `texts` (one per mask) are
        given.
        """
        threshold = validate_threshold(self.mask_threshold if threshold is None else threshold)
        logits = torch.as_tensor(logits).detach()  # post-processing needs no gradient (a forward outside no_grad)
        if logits.dim() == 4 and logits.shape[1] == 1:
            logits = logits[:, 0]
        if logits.dim() != 3:
            raise ValueError(f"logits must be (num_masks, height, width), got shape {tuple(logits.shape)}")
        if texts is not None:
            texts = [texts] if isinstance(texts, str) else list(texts)
            if len(texts) != logits.shape[0]:
                raise ValueError(f"Got {logits.shape[0]} mask logits but {len(texts)} texts: give one per mask")
        original_sizes = size_pairs(original_sizes, "original_sizes")
        if image_indices is not None:
            image_indices = integer_indices(image_indices, "image_indices")
            if len(image_indices) != logits.shape[0]:
                raise ValueError(f"Got {logits.shape[0]} mask logits but {len(image_indices)} image_indices")
            for row, index in enumerate(image_indices):
                if not 0 <= index < len(original_sizes):
                    raise ValueError(
                        f"image_indices[{row}]={index} is out of range for {len(original_sizes)} original_sizes"
                    )
            original_sizes = [original_sizes[index] for index in image_indices]
        if len(original_sizes) == 1 and logits.shape[0] > 1:
            original_sizes = original_sizes * logits.shape[0]
        if len(original_sizes) != logits.shape[0]:
            raise ValueError(f"Got {logits.shape[0]} mask logits but {len(original_sizes)} original_sizes")
        if logits.numel():
            # aminmax propagates NaN: one reduction finds NaN and infinite maps, no boolean map of every logit.
            lowest, highest = torch.aminmax(logits.flatten(1), dim=1)
            nan_rows = torch.isnan(highest).nonzero().flatten().tolist()
            if nan_rows:
                raise NaNLogitsError(nan_rows, texts=None if texts is None else [texts[row] for row in nan_rows])
            if bool(torch.isinf(highest).any() or torch.isinf(lowest).any()):
                # A copy (the caller's logits stay as they are), in float32 (float16's largest value is 65504).
                logits = torch.nan_to_num(logits.float(), posinf=INFINITE_LOGIT, neginf=-INFINITE_LOGIT)
        masks, scores = [None] * len(original_sizes), [None] * len(original_sizes)
        rows_by_size: dict = {}
        for index, size in enumerate(original_sizes):
            rows_by_size.setdefault(size, []).append(index)
        for size, rows in rows_by_size.items():
            # Bounded chunks: many masks of a large image must not hold every probability map at once.
            chunk = max(1, (1 << 25) // (size[0] * size[1]))
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                part_masks, part_scores = self._threshold_resized(logits, part, size, threshold, return_scores)
                for offset, row in enumerate(part):
                    masks[row] = part_masks[offset]
                    if return_scores:
                        scores[row] = part_scores[offset]
        if return_rle:
            from .rle_unires import mask_to_rle

            masks = [mask_to_rle(mask) for mask in masks]
        return (masks, scores) if return_scores else masks


    def _threshold_resized(self, logits, rows, size, threshold, return_scores):
        """
        The masks (bool arrays) and, on request, the scores of `logits[rows]`: resized bilinearly to `size`, then
        `sigmoid > threshold`. A score is the mean probability inside its mask; an empty mask's is its highest
        probability (a low score flags it). [`UniRESImageProcessorFast`] computes the same masks faster on a CPU.
        """
        selected = logits[rows]
        resized = F.interpolate(selected[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        probabilities = resized.sigmoid_()
        binary = probabilities > threshold
        scores = None
        if return_scores:
            area = binary.sum(dim=(1, 2))
            inside = torch.where(binary, probabilities, 0.0).sum(dim=(1, 2)) / area.clamp(min=1)
            scores = torch.where(area > 0, inside, probabilities.amax(dim=(1, 2))).tolist()
        return list(binary.cpu().numpy()), scores


# What +-inf logits are read as. Its sigmoid is 1 in float32 (its negative's 0), so +inf keeps the meaning of a
# certain pixel, and resizing mixes it with its neighbours without inf - inf = NaN. Not float32's largest value:
# where +inf and -inf meet half and half, the float rounding of the bilinear weights (about 1e-7) times the stand-in
# must stay far below the logit cut (0.62 at the default threshold), or the rounding, not the threshold, would
# decide such pixels.
INFINITE_LOGIT = 1e4


def size_pairs(sizes, name: str) -> list:
    """`sizes` as a list of `(height, width)` tuples of positive ints; `ValueError` naming `name` (the argument) and
    the bad item otherwise, and saying to pass `[(h, w)]` for a bare pair."""
    if isinstance(sizes, (torch.Tensor, np.ndarray)):
        sizes = sizes.tolist()
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (list, tuple)):
        raise ValueError(f"{name}={sizes!r} is invalid: expected a list of (height, width) pairs")
    if len(sizes) == 2 and all(_is_number(value) for value in sizes):
        pair = tuple(sizes)
        raise ValueError(
            f"{name}={pair} is one (height, width) pair: {name} is a list of pairs (one per mask, one for all "
            f"masks, or one per image with image_indices); pass [{pair}]"
        )
    pairs = []
    for index, size in enumerate(sizes):
        if isinstance(size, (torch.Tensor, np.ndarray)):
            size = size.tolist()
        if not (
            isinstance(size, (list, tuple)) and len(size) == 2
            and all(_is_number(value) and float(value).is_integer() and value > 0 for value in size)
        ):
            raise ValueError(
                f"{name}[{index}]={size!r} is invalid: expected a (height, width) pair of positive integers"
            )
        pairs.append((int(size[0]), int(size[1])))
    return pairs


def integer_indices(indices, name: str) -> list:
    """`indices` (a list of ints, or a 1-D integer tensor or array) as a list of ints; `ValueError` naming `name`
    and the first value that is not an integer (a float, even a whole one, or a bool)."""
    if isinstance(indices, (torch.Tensor, np.ndarray)):
        if indices.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional (one index per mask), got shape {tuple(indices.shape)}")
        values = indices.tolist()  # floats stay floats, so that the check below names them
    elif isinstance(indices, (list, tuple)):
        values = [value.item() if isinstance(value, (torch.Tensor, np.generic)) else value for value in indices]
    else:
        raise ValueError(f"{name}={indices!r} is invalid: expected a list of ints or an integer tensor")
    bad = [
        row for row, value in enumerate(values) if isinstance(value, bool) or not isinstance(value, (int, np.integer))
    ]
    if bad:
        # Name a fractional value where there is one (0.5 in [0., 0.5, 1.]): the one a silent cast would misread.
        fractional = [row for row in bad if _is_number(values[row]) and not float(values[row]).is_integer()]
        row = (fractional or bad)[0]
        raise ValueError(
            f"{name}[{row}]={values[row]!r} is not an integer: {name} must be integers (a list of ints or an integer "
            "tensor)"
        )
    return [int(value) for value in values]


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


class NaNLogitsError(ValueError):
    """Mask logits holding NaN: `indices` are the masks concerned and `texts` their expressions (when
    `post_process_masks` was given them), both named in the message."""

    def __init__(self, indices, texts=None):
        self.indices = list(indices)
        self.texts = None if texts is None else list(texts)
        what = f"mask(s) {self.indices}"
        if self.texts is not None:
            what = f"the expression(s) {self.texts} ({what})"
        super().__init__(
            f"the model produced NaN mask logits for {what}: its output is invalid (check the weights and the "
            "inputs, e.g. fp16 overflow); no mask can be made from them"
        )


def validate_threshold(threshold) -> float:
    """`threshold` as a float probability in [0, 1]; `ValueError` naming the value otherwise (strings included)."""
    is_number = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
    if not is_number or not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold={threshold!r} is invalid: expected a probability (a number) in [0, 1]")
    return float(threshold)


__all__ = ["INFINITE_LOGIT", "NaNLogitsError", "UniRESImageProcessor"]
