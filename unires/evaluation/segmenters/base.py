"""The segmenter interface: an image and its expressions in, one probability map or mask per expression out.

Every model the harness scores is wrapped as a [`Segmenter`]. `segment(images, expressions, sizes)` takes a batch of
images and, per image, its list of expressions, and returns per image one `(height, width)` array per expression at
the size asked for (by default the image's original size): float probabilities in [0, 1], or booleans when the model
decides the mask itself. [`Segmenter.masks`] turns them into boolean masks with the segmenter's stated `threshold`
(`probability > threshold`, as `binarize`) and checks every count and shape, naming the image and the expression that
is wrong. The harness asks through [`Segmenter.masks_of_rows`] (MRES rows: their images, unless the segmenter reads
more of a row, as the `largest_object_box` baseline does).

Adapters batch where their model can and encode an image once for all of its expressions where the model allows it;
`conventions()` states everything an adapter decides that changes a number (input size, resizing, threshold, how
instances become one mask), and goes into every result.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..metrics import binarize


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a bool mask to (height, width)."""
    if mask.shape == tuple(size):
        return mask
    resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.NEAREST)
    return np.asarray(resized) > 127


def resize_probabilities(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of `(n, h, w)` maps (logits or probabilities) to `size` (height, width)."""
    if tuple(probabilities.shape[-2:]) == tuple(size):
        return probabilities
    return F.interpolate(probabilities[:, None].float(), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def image_size(image) -> tuple[int, int]:
    """(height, width) of a PIL image or an (h, w[, c]) array."""
    if isinstance(image, Image.Image):
        return (image.height, image.width)
    shape = np.asarray(image).shape
    return (int(shape[0]), int(shape[1]))


def rgb(image) -> Image.Image:
    """An RGB PIL image by the one image→RGB rule (EXIF, 16-bit, alpha on white, palette, CMYK): the pixels UniRES's
    processor and the data engine see, whatever model is scored (rows of `datasets` hold PIL images; grayscale COCO
    images exist)."""
    from modeling_unires.image_processing_unires import to_rgb_image

    return to_rgb_image(image)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


class Segmenter:
    """Base of every adapter. Subclasses implement `segment` and extend `conventions`.

    Attributes:
        model_type: the adapter's name in the registry (`unires.evaluation.registry.ADAPTERS`).
        threshold: probability above which a pixel is foreground, applied to probability maps by [`masks`];
            `None` for a segmenter whose `segment` returns boolean masks only and decides them itself.
        input_size: the model's square input side, needed to compare at `resolution="input"`; `None` when unknown.
        shares_image_encoding: whether one image encoding serves all of an image's expressions.
    """

    model_type = "segmenter"
    threshold: Optional[float] = None
    input_size: Optional[int] = None
    shares_image_encoding = False

    def segment(
        self, images: Sequence, expressions: Sequence[Sequence[str]], sizes: Optional[Sequence[tuple]] = None
    ) -> list[list]:
        """Per image, one `(h, w)` probability map (float in [0, 1]) or bool mask per expression, at `sizes[i]`
        (default: the image's original (height, width)). Numpy arrays or torch tensors."""
        raise NotImplementedError

    def conventions(self) -> dict:
        """What this adapter decides that changes a number; written into every result."""
        return {
            "model_type": self.model_type,
            "threshold": self.threshold,
            "threshold_rule": "probability > threshold" if self.threshold is not None else "the model's own masks",
            "input_size": self.input_size,
            "image_encoded_once_per_image": self.shares_image_encoding,
        }

    # ------------------------------------------------------------------------------------------
    def masks(self, images: Sequence, expressions: Sequence[Sequence[str]], sizes=None) -> list[list[np.ndarray]]:
        """Boolean masks, one per expression of each image, at `sizes` (default: original sizes), checked."""
        images = list(images)
        expressions = [list(texts) for texts in expressions]
        if len(images) != len(expressions):
            raise ValueError(f"{len(images)} images and {len(expressions)} lists of expressions: give one list per image")
        sizes = [image_size(image) for image in images] if sizes is None else [tuple(s) for s in sizes]
        if not any(expressions):
            return [[] for _ in images]
        outputs = self.segment(images, expressions, sizes)
        if len(outputs) != len(images):
            raise ValueError(f"{self.model_type} segmenter returned {len(outputs)} lists for {len(images)} images")
        masks = []
        for index, (texts, size, maps) in enumerate(zip(expressions, sizes, outputs)):
            maps = list(maps)
            if len(maps) != len(texts):
                raise ValueError(f"{self.model_type} segmenter returned {len(maps)} masks for the {len(texts)} "
                                 f"expressions of image {index}")
            image_masks = []
            for text, value in zip(texts, maps):
                image_masks.append(self._to_mask(value, size, f"image {index}, expression {text!r}"))
            masks.append(image_masks)
        return masks

    def _to_mask(self, value, size, where: str) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = value.numpy() if value.dtype == torch.bool else value.float().numpy()
        array = np.asarray(value)
        if array.shape != tuple(size):
            raise ValueError(f"{self.model_type} segmenter: {where}: mask of shape {array.shape}, expected the "
                             f"image's size {tuple(size)} (height, width)")
        if array.dtype == bool:
            return array
        if np.issubdtype(array.dtype, np.integer):
            if array.size and (array.min() < 0 or array.max() > 1):
                raise ValueError(f"{self.model_type} segmenter: {where}: integer mask with values outside {{0, 1}}")
            return array.astype(bool)
        if self.threshold is None:
            raise ValueError(f"{self.model_type} segmenter: {where}: probabilities returned but no threshold set")
        if array.size and (np.nanmin(array) < 0 or np.nanmax(array) > 1):
            raise ValueError(f"{self.model_type} segmenter: {where}: values outside [0, 1]; return probabilities "
                             "(sigmoid of the logits) or a bool mask")
        try:
            return binarize(array, self.threshold)
        except ValueError as error:  # NaN: named by expression
            raise ValueError(f"{self.model_type} segmenter: {where}: {error}") from error

    def masks_of_rows(self, rows: Sequence[dict], expressions: Sequence[Sequence[str]],
                      sizes: Sequence[tuple]) -> list[list[np.ndarray]]:
        """What the harness calls: boolean masks for MRES `rows` (their images), one per expression, at `sizes`.
        A segmenter that reads more of a row than its image (the `largest_object_box` baseline) overrides this."""
        return self.masks([row["image"] for row in rows], expressions, sizes)


def chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]
