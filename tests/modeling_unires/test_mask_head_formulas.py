"""The training forward's own formulations equal the reference operations they stand for: the pixel branch
(F.interpolate of the filters, then a dot product), pooling and unpooling (avg_pool2d, repeat), per-image pooling and
the alignment logit. These are not inference paths (those are compared plain against fast in
test_fast_inference.py): training uses them, for speed and memory, and they are checked with their gradients."""

import pytest
import torch

from modeling_unires.token_pooling_unires import add_unpooled, pool_tokens, unpool_tokens
import torch.nn.functional as F

from tiny_models.unires import tiny_model_and_processor


def _dense_pixel_logits(model, decoded, pixel_features, image_indices, grid, patch):
    """The reference: filters upsampled bilinearly to full size, dotted with the image's pixel features."""
    filters = model.mask_head.pixel_filter(decoded).transpose(1, 2).reshape(decoded.shape[0], -1, *grid)
    dense = F.interpolate(filters, scale_factor=patch, mode="bilinear", align_corners=False)
    return (dense * pixel_features[image_indices]).sum(1)


@pytest.mark.parametrize(
    "patch,grid,image_indices",
    [
        (8, (4, 4), [1, 0, 1]),  # expressions out of image order
        (8, (3, 5), [0, 0]),  # a non-square grid, one image
        (7, (4, 3), [2, 0, 1, 2]),  # an odd patch size
    ],
)
def test_pixel_logits_equal_upsampled_filters_dotted_with_features(patch, grid, image_indices):
    model, _ = tiny_model_and_processor(pixel_decoder_channels=4)
    torch.manual_seed(1)
    indices = torch.tensor(image_indices)
    decoded = torch.randn(len(indices), grid[0] * grid[1], model.config.decoder_hidden_size, requires_grad=True)
    features = torch.randn(int(indices.max()) + 1, 4, grid[0] * patch, grid[1] * patch, requires_grad=True)
    fast = model.mask_head._pixel_logits(decoded, features, indices, grid, patch)
    reference = _dense_pixel_logits(model, decoded, features, indices, grid, patch)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    # The gradients reach the tokens and the pixel features alike.
    weights = torch.randn_like(reference)
    fast_grads = torch.autograd.grad((fast * weights).sum(), (decoded, features))
    reference_grads = torch.autograd.grad((reference * weights).sum(), (decoded, features))
    for got, expected in zip(fast_grads, reference_grads):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grid", [(4, 6), (5, 5)])  # whole 2x2 cells, and partial cells at the border
def test_pooling_fast_paths_equal_avg_pool_and_unpool(grid):
    model, _ = tiny_model_and_processor(decoder_token_stride=2)
    torch.manual_seed(2)
    tokens = torch.randn(3, grid[0] * grid[1], 5)
    as_map = tokens.transpose(1, 2).reshape(3, 5, *grid)
    expected = F.avg_pool2d(as_map, 2, ceil_mode=True).flatten(2).transpose(1, 2)
    pooled = pool_tokens(tokens, grid, model.config.decoder_token_stride)
    torch.testing.assert_close(pooled, expected)
    update = torch.randn_like(pooled)
    unpooled = tokens + unpool_tokens(update, grid, model.config.decoder_token_stride)
    torch.testing.assert_close(add_unpooled(tokens, update, grid, model.config.decoder_token_stride), unpooled)


def test_forward_pools_per_image_as_it_would_per_expression():
    """The decoder's input is pooled once per image and scaled by each sentence: the same as pooling every
    expression's fused tokens."""
    model, processor = tiny_model_and_processor(decoder_token_stride=2, pixel_decoder_channels=4)
    text = processor.tokenize(["the red car", "the window", "a wheel"], return_tensors="pt")
    images = torch.randn(2, 3, 32, 32)
    indices = torch.tensor([1, 0, 1])
    with torch.no_grad():
        out = model(pixel_values=images, **text, image_indices=indices, output_hidden_states=True)
        embeddings = model.get_image_embeddings(images)
        visual = model.decoder.visual_projection(model.vision_encoder.split_embeddings(embeddings)[0])
        states = model.text_model(**text).last_hidden_state
        mask = text["attention_mask"]
        last = mask.sum(-1) - 1
        sentence = states[torch.arange(3), last] + (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        fused = visual[indices] * model.decoder.sentence_projection(sentence)[:, None, :]
        per_expression = F.avg_pool2d(fused.transpose(1, 2).reshape(3, -1, 4, 4), 2).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out.decoder_hidden_states[0], per_expression, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mask_head_type", ["pixel_shuffle", "upsample"])
def test_alignment_logit_equals_projected_patches_dotted_with_the_sentence(mask_head_type):
    """The alignment logit is computed from the projected sentence alone; it equals projecting every patch, and is
    added to the mask head's logits over each patch's pixels (nearest upsampling)."""
    model, _ = tiny_model_and_processor(mask_head_type=mask_head_type)
    torch.manual_seed(3)
    width = model.config.decoder_hidden_size
    decoded, sentence_key = torch.randn(3, 16, width), torch.randn(3, width)
    head = model.mask_head
    visual = head.alignment_visual_projection(decoded)
    text = head.alignment_text_projection(sentence_key)
    expected = (visual * text[:, None, :]).sum(-1) / width**0.5
    per_patch = head._alignment_per_patch(decoded, sentence_key)
    torch.testing.assert_close(per_patch, expected, rtol=1e-5, atol=1e-6)
    with_alignment = head._mask_logits(decoded, (4, 4), 8, per_patch)
    without = head._mask_logits(decoded, (4, 4), 8, torch.zeros_like(per_patch))
    nearest = F.interpolate(per_patch.view(3, 1, 4, 4), scale_factor=8, mode="nearest")[:, 0]
    torch.testing.assert_close(with_alignment - without, nearest, rtol=1e-5, atol=1e-5)
