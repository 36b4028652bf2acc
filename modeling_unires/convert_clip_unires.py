"""UniRES from a CLIP checkpoint: what `UniRESModel.from_clip` builds.

The vision and text towers of UniRES are transformers' CLIP modules, so a `CLIPModel` checkpoint's weights load into
them unchanged; only the vision position table is resized when the input size differs. Like the modeling file that
imports it, this file travels beside saved checkpoints (remote code): it imports only torch, transformers and the
configuration beside it.
"""

import math

import torch
import torch.nn.functional as F

from .configuration_unires import UniRESConfig


def interpolate_position_embeddings(weight: torch.Tensor, new_grid: int) -> torch.Tensor:
    """Resize a CLIP position table `(1 + g*g, dim)` to `(1 + new_grid**2, dim)`, bicubically as CLIP does at run time."""
    class_position, patch_positions = weight[:1], weight[1:]
    old_grid = int(math.isqrt(patch_positions.shape[0]))
    if old_grid * old_grid != patch_positions.shape[0]:
        raise ValueError(f"position table of {patch_positions.shape[0]} patches is not a square grid")
    if old_grid == new_grid:
        return weight.clone()
    grid = patch_positions.reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(new_grid * new_grid, -1).to(weight.dtype)
    return torch.cat([class_position, grid], dim=0)


def from_clip(model_class, name_or_path, clip_kwargs: dict | None = None, **config_overrides):
    """
    Build a UniRES model whose vision and text towers are a `CLIPModel` checkpoint's, weights copied unchanged.

    Args:
        model_class: the model class to build (`UniRESModel`, or a subclass).
        name_or_path: Hub id or folder of a `CLIPModel` checkpoint (e.g. `"openai/clip-vit-base-patch16"`).
        clip_kwargs: extra arguments for `CLIPModel.from_pretrained` (`revision`, `cache_dir`, ...).
        config_overrides: `UniRESConfig` arguments; `image_size=` sets the model input size, in which case
            the CLIP position table is resized bicubically to the new patch grid (nothing else changes).
            `vision_config=` / `text_config=` dicts update the checkpoint's sub-configs.
    """
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(name_or_path, **(clip_kwargs or {}))
    vision_dict = clip.config.vision_config.to_dict()
    text_dict = clip.config.text_config.to_dict()
    vision_dict.update(config_overrides.pop("vision_config", None) or {})
    text_dict.update(config_overrides.pop("text_config", None) or {})
    image_size = config_overrides.pop("image_size", None)
    if image_size is not None:
        vision_dict["image_size"] = image_size
    config = UniRESConfig(vision_config=vision_dict, text_config=text_dict, **config_overrides)
    model = model_class(config)

    vision_state = clip.vision_model.state_dict()
    key = "embeddings.position_embedding.weight"
    new_grid = config.vision_config.image_size // config.vision_config.patch_size
    vision_state[key] = interpolate_position_embeddings(vision_state[key], new_grid)
    model.vision_encoder.vision_model.load_state_dict(vision_state, strict=True)
    model.text_model.load_state_dict(clip.text_model.state_dict(), strict=True)
    return model


__all__ = ["from_clip", "interpolate_position_embeddings"]
