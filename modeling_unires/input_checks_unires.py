"""The checks a UniRES call's inputs get before the model runs, with errors that name what is wrong.

Shared by `UniRESModel.forward` and by any runtime that serves the same inputs (the ONNX Runtime model of
`unires.export`), so that a wrong count or shape reads the same whichever runs it. Remote code: imports only torch.
"""

import math

import torch


def check_model_inputs(config, pixel_values, input_ids, image_embeddings) -> None:
    """What `forward` needs at least: images or their embeddings (and the images too for a pixel branch), and the
    expressions."""
    if pixel_values is None and image_embeddings is None:
        raise ValueError("Pass `pixel_values` or `image_embeddings`")
    if image_embeddings is not None and pixel_values is None and config.pixel_decoder_channels:
        raise ValueError(
            "This model has a pixel branch (config.pixel_decoder_channels="
            f"{config.pixel_decoder_channels}): pass `pixel_values` together with `image_embeddings`"
        )
    if input_ids is None:
        raise ValueError("`input_ids` (the tokenised expressions) are required")

def grid_of_image_embeddings(config, image_embeddings, pixel_values) -> tuple[int, int]:
    """The (square) patch grid of given image embeddings, checked against the images passed beside them."""
    expected = config.vision_config.hidden_size
    if image_embeddings.dim() != 3 or image_embeddings.shape[-1] != expected:
        raise ValueError(
            f"image_embeddings must be (num_images, tokens, {expected}), got {tuple(image_embeddings.shape)}"
        )
    num_patches = image_embeddings.shape[1] - config.num_group_tokens_used
    side = math.isqrt(max(num_patches, 0))
    if num_patches <= 0 or side * side != num_patches:
        raise ValueError(
            f"image_embeddings hold {image_embeddings.shape[1]} tokens: expected a square patch grid plus "
            f"{config.num_group_tokens_used} group tokens"
        )
    patch = config.vision_config.patch_size
    if pixel_values is not None and (
        pixel_values.shape[0] != image_embeddings.shape[0]
        or tuple(pixel_values.shape[-2:]) != (side * patch, side * patch)
    ):
        raise ValueError(
            f"pixel_values are {pixel_values.shape[0]} images of {tuple(pixel_values.shape[-2:])} but "
            f"image_embeddings hold {image_embeddings.shape[0]} images of a {side}x{side} patch grid: pass "
            "the images the embeddings were computed from"
        )
    return side, side

def resolve_image_indices(image_indices, num_images: int, num_expressions: int, device):
    """Each expression's image row: `image_indices` checked (integers, one per expression, in range), or the
    default (the identity when the counts match, every expression on a single image)."""
    if image_indices is None:
        if num_images == num_expressions:
            return torch.arange(num_expressions, device=device)
        if num_images == 1:
            return torch.zeros(num_expressions, dtype=torch.long, device=device)
        raise ValueError(
            f"Got {num_images} images and {num_expressions} expressions: pass one image, as many images as "
            "expressions, or `image_indices` mapping each expression to its image"
        )
    image_indices = torch.as_tensor(image_indices, device=device)
    if image_indices.is_floating_point() or image_indices.is_complex() or image_indices.dtype == torch.bool:
        # `.long()` would read 0.5 as image 0.
        raise ValueError(
            f"image_indices must be integers (a list of ints or an integer tensor), got {image_indices.dtype} "
            f"values {image_indices.flatten()[:8].tolist()}"
        )
    image_indices = image_indices.long()
    if image_indices.shape != (num_expressions,):
        raise ValueError(
            f"image_indices has shape {tuple(image_indices.shape)}, expected ({num_expressions},) "
            "(one image index per expression)"
        )
    if num_expressions and (image_indices.min() < 0 or image_indices.max() >= num_images):
        raise ValueError(f"image_indices {image_indices.tolist()} out of range for {num_images} images")
    return image_indices
