"""COCO run-length encoding of masks, the one output that needs pycocotools.

This file travels beside saved checkpoints (remote code) with the pipeline and the image processor, which import it
only when RLE is asked for; it imports numpy and, on demand, pycocotools.
"""

import numpy as np


def mask_to_rle(mask: np.ndarray) -> dict:
    """
    COCO RLE `{"size": [h, w], "counts": str}` of a 2-D boolean mask (pycocotools).

    pycocotools is needed only here: the processor and the model load without it (also as remote code, where
    transformers checks every import a file makes outside `try` blocks), and asking for RLE without it raises an
    `ImportError` that says how to install it.
    """
    try:
        from pycocotools import mask as mask_utils
    except ImportError as error:
        raise ImportError(
            "COCO RLE output needs pycocotools (`pip install pycocotools`); masks as arrays or images do not "
            "(the pipeline and `post_process_masks`: `return_rle=False`, their default)"
        ) from error

    rle = mask_utils.encode(np.asfortranarray(mask.view(np.uint8) if mask.dtype == np.bool_ else mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


__all__ = ["mask_to_rle"]
