"""The trivial baselines as [`Segmenter`]s: numbers every model must beat, scored by the same harness.

`full_image` answers every expression with the whole image. `largest_object_box` answers with the filled box of the
image's largest annotated object: it reads the ground truth of the MRES row (a reference, not a model), so it answers
through `masks_of_rows` and refuses bare images.
"""

from __future__ import annotations

import numpy as np

from .base import Segmenter, resize_mask


class FullImageSegmenter(Segmenter):
    model_type = "full_image"
    shares_image_encoding = True  # nothing to encode

    def segment(self, images, expressions, sizes=None):
        return [[np.ones(tuple(size), dtype=bool) for _ in texts] for texts, size in zip(expressions, sizes)]

    def conventions(self) -> dict:
        return {**super().conventions(), "mask_rule": "the whole image for every expression"}


def largest_object_box(row: dict) -> np.ndarray:
    """The filled box of the row's largest object referent (any referent when it has no object), at its size."""
    objects = [r for r in row["referents"] if r["granularity"] == "object"] or list(row["referents"])
    mask = np.zeros((row["height"], row["width"]), dtype=bool)
    if objects:
        x, y, w, h = max(objects, key=lambda r: r["bbox"][2] * r["bbox"][3])["bbox"]
        mask[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = True
    return mask


class LargestObjectBoxSegmenter(Segmenter):
    model_type = "largest_object_box"
    shares_image_encoding = True

    def segment(self, images, expressions, sizes=None):
        raise TypeError("the largest_object_box baseline reads the boxes of MRES rows: call masks_of_rows(rows, "
                        "expressions, sizes) (the harness does), not segment(images, ...)")

    def masks_of_rows(self, rows, expressions, sizes):
        return [[resize_mask(largest_object_box(row), tuple(size)) for _ in texts]
                for row, texts, size in zip(rows, expressions, sizes)]

    def conventions(self) -> dict:
        return {**super().conventions(), "mask_rule": "the filled box of the image's largest annotated object "
                                                      "(reads the ground truth: a reference, not a model)"}
