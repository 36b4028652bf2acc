"""PyTorch UniRES: multi-granularity referring expression segmentation (Wang et al., CVPR 2024).

Composed as transformers' `SamModel` is: `UniRESModel` = `UniRESVisionEncoder` (CLIP's vision tower carrying the
low/high-level group tokens) + CLIP's text tower + `UniRESDecoder` (projections, language-guided region filters,
two-stage vision-language decoder) + `UniRESMaskHead` (mask head, alignment logit, pixel branch). The CLIP towers are
transformers' own CLIP modules, so CLIP checkpoints load into them unchanged.

This file is copied beside saved checkpoints (remote code), so it imports only `torch`, `transformers` and the
configuration file beside it.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTextModel, CLIPVisionModel, PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.clip.modeling_clip import eager_attention_forward
from transformers.utils import ModelOutput, logging

from .configuration_unires import UniRESConfig
from .token_pooling_unires import add_unpooled, pool_tokens, pooled_grid
from .input_checks_unires import check_model_inputs, grid_of_image_embeddings, resolve_image_indices

try:  # transformers >= 5: init functions that leave already-loaded weights alone
    from transformers import initialization as init
except ImportError:  # pragma: no cover - older transformers
    init = nn.init


logger = logging.get_logger(__name__)


@dataclass
class UniRESOutput(ModelOutput):
    r"""
    Output of [`UniRESModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            `bce_loss_weight * BCE-with-logits + dice_loss_weight * Dice`, averaged over expressions.
        logits (`torch.FloatTensor` of shape `(num_expressions, height, width)`):
            Mask logits at the model input resolution (`config.image_size` square for processor outputs). Apply a
            sigmoid and the threshold (0.35), or use `UniRESProcessor.post_process_masks`, to get masks.
        image_embeddings (`torch.FloatTensor` of shape `(num_images, num_patches + num_group_tokens, hidden)`,
            *optional*, returned with `output_image_embeddings=True`):
            What [`UniRESModel.get_image_embeddings`] returns: visual tokens, then low-, then high-level group tokens.
        group_tokens (`torch.FloatTensor` of shape `(num_expressions, num_group_tokens, decoder_hidden_size)`,
            *optional*, returned with `output_group_tokens=True`):
            The group tokens after the language-guided region filter (low then high), i.e. what stage 2 attends to.
        group_token_scores (`torch.FloatTensor` of shape `(num_expressions, num_group_tokens)`, *optional*,
            returned with `output_group_tokens=True`):
            Relevance in [0, 1] of every group token to its expression, as selected by the region filter.
        vision_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True` when
            the images are encoded in this call, i.e. not with `image_embeddings`):
            The vision tower's input (after CLIP's pre-layernorm) and the output of each of its layers, each
            `(num_images, 1 + num_patches + group tokens, vision_hidden)`: up to `group_insert_layer` the group tokens
            are the low-level ones, after it the high-level ones (none in the "no group tokens" ablation).
        text_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The text tower's embeddings and the output of each of its layers, each
            `(num_expressions, text_length, text_hidden)` (before CLIP's final layernorm, as `CLIPTextModel` returns
            them).
        decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
            The decoder's input (visual tokens fused with the sentence, pooled by `decoder_token_stride`) and the
            output of each stage-1 then stage-2 layer, each `(num_expressions, decoder_tokens, decoder_hidden_size)`.
        region_filter_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            The language-guided region filter's cross-attention maps, low-level then high-level group tokens (only
            the levels the config uses), each `(num_expressions, heads, num_level_group_tokens, text_length)`.
        decoder_attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
            The V-L decoder's cross-attention maps, one per layer as in `decoder_hidden_states`: each stage-1 layer's
            `(num_expressions, heads, decoder_tokens, text_length)` (visual over text tokens), then each stage-2
            layer's `(num_expressions, heads, decoder_tokens, num_group_tokens)` (visual over group tokens).

    The CLIP towers' own self-attention maps are not returned (transformers' `CLIPVisionModel` and `CLIPTextModel`
    give them when called alone with `output_attentions=True`).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeddings: torch.FloatTensor | None = None
    group_tokens: torch.FloatTensor | None = None
    group_token_scores: torch.FloatTensor | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    text_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    region_filter_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class UniRESVisionEncoderOutput(ModelOutput):
    r"""
    Output of [`UniRESVisionEncoder`].

    Args:
        image_embeddings (`torch.FloatTensor` of shape `(num_images, num_patches + num_group_tokens, hidden)`):
            See [`UniRESModel.get_image_embeddings`].
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): see `UniRESOutput.vision_hidden_states`.
    """

    image_embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class UniRESDecoderOutput(ModelOutput):
    r"""
    Output of [`UniRESDecoder`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(num_expressions, num_patches, decoder_hidden_size)`):
            The decoded visual tokens on the full patch grid, after the decoder's final layernorm: what the mask head
            reads.
        sentence_embedding (`torch.FloatTensor` of shape `(num_expressions, decoder_hidden_size)`):
            The projected sentence vector that scales the visual tokens (and that the mask head's alignment reads).
        group_tokens, group_token_scores: see [`UniRESOutput`] (`None` without group tokens).
        hidden_states, region_filter_attentions, attentions: `UniRESOutput.decoder_hidden_states`,
            `.region_filter_attentions` and `.decoder_attentions`.
    """

    last_hidden_state: torch.FloatTensor | None = None
    sentence_embedding: torch.FloatTensor | None = None
    group_tokens: torch.FloatTensor | None = None
    group_token_scores: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    region_filter_attentions: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


def sine_position_encoding(grid: tuple[int, int], width: int, device=None, dtype=None) -> torch.Tensor:
    """
    DETR's 2D sine encoding of a `rows x cols` token grid, `(rows * cols, width)`: the first half of the channels
    encodes the row, the second the column, each as sines then cosines of the cell centre's normalised coordinate
    (times 2 pi) at geometric frequencies. Normalised coordinates make it the same at every input resolution.
    """
    rows, cols = grid
    quarter = width // 4
    frequencies = 10000.0 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)

    def encode(count):
        angle = (torch.arange(count, device=device, dtype=torch.float32) + 0.5) / count * (2 * math.pi)
        angle = angle[:, None] / frequencies
        return torch.cat([angle.sin(), angle.cos()], dim=-1)  # (count, width / 2)

    along_rows = encode(rows)[:, None, :].expand(rows, cols, 2 * quarter)
    along_cols = encode(cols)[None, :, :].expand(rows, cols, 2 * quarter)
    return torch.cat([along_rows, along_cols], dim=-1).reshape(rows * cols, width).to(dtype)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss per expression, averaged: `1 - (2|P∩Y| + s) / (|P| + |Y| + s)` with P = sigmoid(logits)."""
    probabilities = logits.sigmoid().flatten(1)
    labels = labels.flatten(1)
    intersection = (probabilities * labels).sum(-1)
    total = probabilities.sum(-1) + labels.sum(-1)
    return (1.0 - (2.0 * intersection + smooth) / (total + smooth)).mean()


def sentence_embedding(text_states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """
    The sentence vector `(expressions, text_hidden)`: CLIP's end-of-text token (the last attended one) plus the mean
    of the attended tokens. The mean carries every word from the first step, which a text tower trained from scratch
    needs; with a pretrained tower the EOS state dominates as in CLIP.
    """
    last_token = (attention_mask.long().sum(-1) - 1).clamp(min=0)
    eos_state = text_states[torch.arange(text_states.shape[0], device=text_states.device), last_token]
    token_weights = attention_mask.to(text_states.dtype)[..., None]
    mean_state = (text_states * token_weights).sum(1) / token_weights.sum(1).clamp(min=1)
    return eos_state + mean_state


class UniRESGroupTokens(nn.Module):
    """The learnable low- and high-level group tokens (kept outside `vision_model` so that they get their own lr)."""

    def __init__(self, config: UniRESConfig):
        super().__init__()
        hidden = config.vision_config.hidden_size
        self.low = nn.Parameter(torch.zeros(config.num_low_group_tokens, hidden)) if config.use_low_group_tokens else None
        self.high = (
            nn.Parameter(torch.zeros(config.num_high_group_tokens, hidden)) if config.use_high_group_tokens else None
        )


class UniRESAttention(nn.Module):
    """
    Multi-head (cross-)attention through transformers' attention interface: `config._attn_implementation` ("sdpa" by
    default, or "eager") picks the kernel, so `set_attn_implementation` reaches the decoder as it reaches the CLIP
    towers. When the weights are requested they are computed eagerly, whatever the implementation.
    """

    def __init__(self, config: UniRESConfig, hidden_size: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = dropout
        self.is_causal = False
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, queries, keys_values, key_mask=None, output_attentions=False, values=None):
        """`key_mask`: bool `(batch, keys)`, True where a key may be attended to. `values`: when the values differ from
        the keys (positions added to queries and keys only); default `keys_values`."""
        values = keys_values if values is None else values
        return self.attend(self.q_proj(queries), self.k_proj(keys_values), self.v_proj(values), key_mask,
                           output_attentions)

    def attend(self, queries, keys, values, key_mask=None, output_attentions=False):
        """Attention over projected `(batch, tokens, hidden)` queries, keys and values, then `out_proj`:
        `(output, weights)` (weights `None` unless `output_attentions`)."""
        q, k, v = self._heads(queries), self._heads(keys), self._heads(values)
        mask = None
        if key_mask is not None:
            # Additive `(batch, 1, 1, keys)` mask, as both eager and sdpa take it: 0 where a key may be attended to.
            mask = torch.zeros(key_mask.shape, dtype=q.dtype, device=q.device)
            mask = mask.masked_fill(~key_mask, torch.finfo(q.dtype).min)[:, None, None, :]
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        out, weights = attention(
            self, q, k, v, mask, dropout=self.dropout if self.training else 0.0, scaling=self.scaling
        )
        out = out.reshape(q.shape[0], q.shape[2], -1)
        return self.out_proj(out), weights


class UniRESMLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))


class UniRESDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer layer: self-attention, cross-attention to a memory (text or group tokens), MLP."""

    def __init__(self, config: UniRESConfig, self_attention: bool = True):
        super().__init__()
        width, heads, dropout = config.decoder_hidden_size, config.decoder_num_attention_heads, config.decoder_dropout
        self.self_attn = UniRESAttention(config, width, heads, dropout) if self_attention else None
        self.self_attn_norm = nn.LayerNorm(width) if self_attention else None
        self.cross_attn = UniRESAttention(config, width, heads, dropout)
        self.cross_attn_norm = nn.LayerNorm(width)
        self.memory_norm = nn.LayerNorm(width)
        self.mlp = UniRESMLP(width, config.decoder_intermediate_size, dropout)
        self.mlp_norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, memory, memory_mask=None, output_attentions=False, positions=None):
        """`positions`: encodings added to the queries and keys of the tokens (not to their values), as in DETR."""
        if self.self_attn is not None:
            normed = self.self_attn_norm(hidden_states)
            located = normed if positions is None else normed + positions
            attended = self.self_attn(located, located, values=normed)[0]
            hidden_states = hidden_states + self.dropout(attended)
        queries = self.cross_attn_norm(hidden_states)
        if positions is not None:
            queries = queries + positions
        memory = self.memory_norm(memory)
        attended, weights = self.cross_attn(queries, memory, memory_mask, output_attentions)
        hidden_states = hidden_states + self.dropout(attended)
        hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        return hidden_states, weights


class UniRESRegionFilter(nn.Module):
    """
    Language-guided region filter for one level of group tokens: the group tokens attend to the expression's tokens
    (cross-attention + MLP), then each gets a relevance score from its agreement with the sentence embedding; the
    filtered tokens are the attended tokens scaled by that score, so irrelevant regions fade out of stage 2.
    """

    def __init__(self, config: UniRESConfig):
        super().__init__()
        width = config.decoder_hidden_size
        self.layer = UniRESDecoderLayer(config, self_attention=False)
        self.score_norm = nn.LayerNorm(width)
        self.score_query = nn.Linear(width, width)
        self.score_key = nn.Linear(width, width)
        self.score_bias = nn.Parameter(torch.zeros(()))

    def forward(self, group_tokens, text_tokens, text_mask, sentence, output_attentions=False, image_indices=None):
        """`group_tokens` per expression, or with `image_indices` per image (each expression then gets its image's)."""
        if image_indices is not None:
            group_tokens = group_tokens.index_select(0, image_indices)
        group_tokens, weights = self.layer(group_tokens, text_tokens, text_mask, output_attentions)
        return (*self.keep_relevant(group_tokens, sentence), weights)

    def keep_relevant(self, group_tokens, sentence):
        """`(filtered tokens, scores)`: each attended group token scaled by its relevance to the sentence."""
        queries = self.score_query(self.score_norm(group_tokens))
        key = self.score_key(sentence)[:, :, None]
        scores = torch.sigmoid((queries @ key).squeeze(-1) / math.sqrt(queries.shape[-1]) + self.score_bias)
        return group_tokens * scores[..., None], scores


class UniRESPixelDecoder(nn.Module):
    """
    The optional full-resolution pixel branch: two 3x3 convolutions on the input image, computed once per image.
    Each decoded token turns the features of its patch's pixels into logits (a filter per token, applied by a dot
    product), so that a mask can follow an edge that cuts through a patch.
    """

    def __init__(self, config: UniRESConfig):
        super().__init__()
        channels = config.pixel_decoder_channels
        self.conv_in = nn.Conv2d(config.vision_config.num_channels, channels, kernel_size=3, padding=1)
        self.conv_out = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # One image at a time: a batched convolution may pick another algorithm for another batch size, and an
        # image's features (so its masks) must not depend on the other images of the call.
        return torch.cat([self.conv_out(F.gelu(self.conv_in(image[None]))) for image in pixel_values])


class UniRESVisionEncoder(nn.Module):
    """
    The CLIP vision tower (transformers' `CLIPVisionModel`, whose layers it runs one by one) carrying the group tokens:
    the low-level ones join the patch tokens before the first layer and leave at `group_insert_layer`, where the
    high-level ones join, to leave after the last layer. It does not depend on the text.
    """

    def __init__(self, config: UniRESConfig):
        super().__init__()
        self.config = config
        self.vision_model = CLIPVisionModel._from_config(config.vision_config)
        self.group_tokens = UniRESGroupTokens(config)
        # Low-level tokens leave mid-network, before CLIP's post-layernorm sees anything: they get their own norm.
        self.low_group_norm = (
            nn.LayerNorm(config.vision_config.hidden_size) if config.use_low_group_tokens else None
        )

    def forward(self, pixel_values: torch.FloatTensor, output_hidden_states: bool = False) -> UniRESVisionEncoderOutput:
        """Image embeddings (patch tokens without CLS, then low-, then high-level group tokens) and, on request, the
        tower's hidden states (see `UniRESOutput.vision_hidden_states`)."""
        if pixel_values is None or pixel_values.dim() != 4:
            shape = None if pixel_values is None else tuple(pixel_values.shape)
            raise ValueError(f"pixel_values must be a 4-D tensor (num_images, channels, height, width), got {shape}")
        height, width = pixel_values.shape[-2:]
        patch = self.config.vision_config.patch_size
        if height % patch or width % patch or height == 0 or width == 0:
            raise ValueError(f"pixel_values size {height}x{width} is not a positive multiple of patch_size={patch}")
        vision, low, high = self.vision_model, self.group_tokens.low, self.group_tokens.high
        batch = pixel_values.shape[0]
        embeddings = vision.embeddings(pixel_values, interpolate_pos_encoding=True)
        num_patches = embeddings.shape[1] - 1
        if low is not None:
            embeddings = torch.cat([embeddings, low.to(embeddings.dtype).expand(batch, -1, -1)], dim=1)
        hidden_states = vision.pre_layrnorm(embeddings)
        all_hidden_states = (hidden_states,) if output_hidden_states else None

        low_out = None
        for index, layer in enumerate(vision.encoder.layers):
            if index == self.config.group_insert_layer and self.config.uses_group_tokens:
                if low is not None:
                    low_out = hidden_states[:, -low.shape[0] :]
                    hidden_states = hidden_states[:, : -low.shape[0]]
                if high is not None:
                    # High-level tokens enter normalised like every token entering the first layer.
                    high_in = vision.pre_layrnorm(high.to(hidden_states.dtype)).expand(batch, -1, -1)
                    hidden_states = torch.cat([hidden_states, high_in], dim=1)
            output = layer(hidden_states, None)
            hidden_states = output[0] if isinstance(output, tuple) else output
            if output_hidden_states:
                all_hidden_states += (hidden_states,)

        parts = [vision.post_layernorm(hidden_states[:, 1 : 1 + num_patches])]
        if low_out is not None:
            parts.append(self.low_group_norm(low_out))
        if high is not None:
            parts.append(vision.post_layernorm(hidden_states[:, -high.shape[0] :]))
        return UniRESVisionEncoderOutput(image_embeddings=torch.cat(parts, dim=1), hidden_states=all_hidden_states)

    def split_embeddings(self, image_embeddings: torch.Tensor):
        """`(visual, low, high)` parts of image embeddings; a group level the config does not use is `None`."""
        config = self.config
        num_low = config.num_low_group_tokens if config.use_low_group_tokens else 0
        num_high = config.num_high_group_tokens if config.use_high_group_tokens else 0
        num_patches = image_embeddings.shape[1] - num_low - num_high
        visual = image_embeddings[:, :num_patches]
        low = image_embeddings[:, num_patches : num_patches + num_low] if num_low else None
        high = image_embeddings[:, num_patches + num_low :] if num_high else None
        return visual, low, high


class UniRESDecoder(nn.Module):
    """
    Everything between the towers and the mask head: the projections to the decoder width, the language-guided region
    filters (one per group-token level), the two-stage vision-language decoder (stage 1: visual tokens over the text
    tokens; stage 2: over the filtered group tokens) and its position encoding. Optionally it decodes the patch grid
    pooled by `decoder_token_stride` and adds the decoded update back onto every patch.
    """

    def __init__(self, config: UniRESConfig):
        super().__init__()
        self.config = config
        vision_hidden, text_hidden = config.vision_config.hidden_size, config.text_config.hidden_size
        width = config.decoder_hidden_size
        self.visual_projection = nn.Sequential(nn.Linear(vision_hidden, width), nn.LayerNorm(width))
        self.text_projection = nn.Sequential(nn.Linear(text_hidden, width), nn.LayerNorm(width))
        self.sentence_projection = nn.Sequential(nn.Linear(text_hidden, width), nn.LayerNorm(width))
        self.low_region_filter = self.high_region_filter = self.group_projection = None
        if config.uses_group_tokens:
            self.group_projection = nn.Sequential(nn.Linear(vision_hidden, width), nn.LayerNorm(width))
        if config.use_low_group_tokens:
            self.low_region_filter = UniRESRegionFilter(config)
        if config.use_high_group_tokens:
            self.high_region_filter = UniRESRegionFilter(config)
        self.stage1_layers = nn.ModuleList(UniRESDecoderLayer(config) for _ in range(config.decoder_stage1_layers))
        # "No group tokens" (Table 8) also drops the stage-2 decoder.
        num_stage2 = config.decoder_stage2_layers if config.uses_group_tokens else 0
        self.stage2_layers = nn.ModuleList(UniRESDecoderLayer(config) for _ in range(num_stage2))
        self.norm = nn.LayerNorm(width)

    def forward(
        self, visual, low, high, text_states, attention_mask, image_indices, grid,
        output_attentions: bool = False, output_hidden_states: bool = False,
    ) -> UniRESDecoderOutput:
        """
        `visual`, `low`, `high`: an image's parts of `UniRESVisionEncoder.split_embeddings`, per image;
        `text_states`, `attention_mask`: the text tower's last states and the mask, per expression; `image_indices`:
        each expression's image; `grid`: the `(rows, cols)` patch grid.
        """
        text_tokens = self.text_projection(text_states)
        text_mask = attention_mask.bool()
        # Multiplicative sentence-visual fusion (as in CRIS): from the first step the decoder input depends on the
        # expression, so different expressions on one image get different masks early in training.
        sentence_key = self.sentence_projection(sentence_embedding(text_states, attention_mask))
        # Project once per image, then gather per expression: gradients flow through the shared encoding.
        visual = self.visual_projection(visual)
        fused = visual.index_select(0, image_indices) * sentence_key[:, None, :]
        pooled = fused
        if self.config.decoder_token_stride > 1:
            # Pooling is linear and the sentence scales every token alike: pool once per image, not per expression.
            pooled = pool_tokens(visual, grid, self.config.decoder_token_stride).index_select(0, image_indices) * sentence_key[:, None, :]
        positions = None
        if self.config.decoder_position_encoding == "sine":
            positions = sine_position_encoding(pooled_grid(grid, self.config.decoder_token_stride), pooled.shape[-1], pooled.device, pooled.dtype)
        group_tokens, scores, filter_attentions = self.filter_regions(
            low, high, text_tokens, text_mask, sentence_key, image_indices, output_attentions
        )

        hidden_states = pooled
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        attentions = () if output_attentions else None
        # Stage 1 attends to the text tokens, stage 2 to the filtered group tokens.
        stages = [(layer, text_tokens, text_mask) for layer in self.stage1_layers]
        stages += [(layer, group_tokens, None) for layer in self.stage2_layers]
        for layer, memory, memory_mask in stages:
            hidden_states, weights = layer(hidden_states, memory, memory_mask, output_attentions, positions)
            if output_attentions:
                attentions += (weights,)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        if self.config.decoder_token_stride > 1:
            # Every patch token receives the update its pooled cell got from the decoder.
            hidden_states = add_unpooled(fused, hidden_states - pooled, grid, self.config.decoder_token_stride)
        return UniRESDecoderOutput(
            last_hidden_state=self.norm(hidden_states),
            sentence_embedding=sentence_key,
            group_tokens=group_tokens,
            group_token_scores=scores,
            hidden_states=all_hidden_states,
            region_filter_attentions=filter_attentions,
            attentions=attentions,
        )

    def filter_regions(self, low, high, text_tokens, text_mask, sentence_key, image_indices, output_attentions=False):
        """The language-guided region filter of each level: `(group_tokens, scores, attentions)`, levels concatenated
        (low then high); the first two are `None` without group tokens, the last is `None` unless requested."""
        filtered, scores = [], []
        attentions = () if output_attentions else None
        for tokens, region_filter in ((low, self.low_region_filter), (high, self.high_region_filter)):
            if tokens is None:
                continue
            kept, score, weights = region_filter(
                self.group_projection(tokens), text_tokens, text_mask, sentence_key, output_attentions, image_indices
            )
            filtered.append(kept)
            scores.append(score)
            if output_attentions:
                attentions += (weights,)
        if not filtered:
            return None, None, attentions
        return torch.cat(filtered, dim=1), torch.cat(scores, dim=1), attentions


class UniRESMaskHead(nn.Module):
    """
    From decoded visual tokens to mask logits at input resolution: a linear head (a `patch x patch` block of logits per
    token, or one upsampled logit), plus the text-to-pixel alignment logit of each patch and, with
    `pixel_decoder_channels > 0`, the pixel branch's logit of each pixel.
    """

    def __init__(self, config: UniRESConfig):
        super().__init__()
        self.config = config
        width, patch = config.decoder_hidden_size, config.vision_config.patch_size
        outputs_per_token = patch * patch if config.mask_head_type == "pixel_shuffle" else 1
        self.projection = nn.Linear(width, outputs_per_token)
        # Text-to-pixel alignment (as in CRIS, the paper's lineage): a per-patch logit from the dot product of the
        # decoded patch and the sentence. It couples every patch's gradient to the sentence directly, which makes a
        # model trained from scratch ground expressions several times faster.
        self.alignment_visual_projection = nn.Linear(width, width)
        self.alignment_text_projection = nn.Linear(width, width)
        self.pixel_decoder = self.pixel_filter = None
        if config.pixel_decoder_channels:
            self.pixel_decoder = UniRESPixelDecoder(config)
            self.pixel_filter = nn.Linear(width, config.pixel_decoder_channels)

    def forward(self, decoded, sentence_embedding, grid, pixel_values=None, image_indices=None) -> torch.Tensor:
        """`(expressions, rows * patch, cols * patch)` logits from `UniRESDecoderOutput.last_hidden_state` and
        `.sentence_embedding`; `pixel_values` (per image) and `image_indices` feed the pixel branch."""
        patch = self.config.vision_config.patch_size
        logits = self._mask_logits(decoded, grid, patch, self._alignment_per_patch(decoded, sentence_embedding))
        if self.pixel_decoder is not None:
            logits = logits + self._pixel_logits(decoded, self.pixel_decoder(pixel_values), image_indices, grid, patch)
        return logits

    def _pixel_logits(self, decoded, pixel_features, image_indices, grid, patch):
        """
        Every token's filter, interpolated bilinearly between patch centres (as `F.interpolate(scale_factor=patch,
        mode="bilinear", align_corners=False)`), dotted with its image's pixel features: `(expressions, H, W)` logits.

        The interpolated filters (`expressions x channels x H x W`) are never made. A pixel between four patch centres
        gets `sum_n w_n <f_n, p>` = `<[f_1..f_4], [w_1 p..w_4 p]>`: the weighted pixel features depend on the image
        only (made once per image), and each cell between four patch centres is one matrix product
        `(expressions, 4 * channels) @ (4 * channels, patch * patch)`.
        """
        rows, cols = grid
        num_expressions, channels = decoded.shape[0], pixel_features.shape[1]
        filters = self.pixel_filter(decoded).view(num_expressions, rows, cols, channels)
        # Bilinear upsampling clamps at the border; a ring of replicated patches does the same.
        row_index = torch.arange(-1, rows + 1, device=decoded.device).clamp(0, rows - 1)
        col_index = torch.arange(-1, cols + 1, device=decoded.device).clamp(0, cols - 1)
        filters = filters.index_select(1, row_index).index_select(2, col_index)
        # Cell (j, k) lies between padded patch centres j, j+1 (rows) and k, k+1 (columns): its four corner filters.
        corners = torch.stack(
            [filters[:, :-1, :-1], filters[:, :-1, 1:], filters[:, 1:, :-1], filters[:, 1:, 1:]], dim=3
        )  # (expressions, rows + 1, cols + 1, 4, channels)
        corners = corners.reshape(num_expressions, -1, 4 * channels).transpose(0, 1)  # (cells, expressions, 4C)

        # Pixels, padded so that every cell is patch x patch: pixel y sits at (y + lead) in the padded map, and its
        # source coordinate (y + 0.5) / patch - 0.5 has the fraction `offset` within its cell.
        lead = patch - patch // 2
        offset = (torch.arange(patch, device=decoded.device, dtype=torch.float32) - lead + 0.5) / patch + 0.5
        along = torch.stack([1 - offset, offset])  # (2, patch): weight of the first and second centre
        weights = (along[:, None, :, None] * along[None, :, None, :]).reshape(4, 1, patch, patch)
        weights = weights.to(pixel_features.dtype)  # computed in float32 (as interpolation does), then cast
        cells = (rows + 1) * (cols + 1)

        members, logits = [], []
        features = pixel_features.unbind(0)  # per image, so that the backward makes no zero-filled full-size copies
        for image in image_indices.unique().tolist():
            rows_of_image = (image_indices == image).nonzero().squeeze(1)
            padded = F.pad(features[image], (lead, patch // 2, lead, patch // 2))
            # Cell-major before the product, so that the (larger) weighted features come out contiguous.
            padded = padded.view(channels, rows + 1, patch, cols + 1, patch).permute(1, 3, 0, 2, 4).contiguous()
            weighted = (padded[:, :, None] * weights).view(cells, 4 * channels, patch * patch)
            # (cells, e, patch^2), one expression per product: a matrix product's kernel (and so its rounding) may
            # change with the number of rows, and an expression's logits must not depend on the others in the call.
            corners_of_image = corners.index_select(1, rows_of_image)
            per_cell = torch.cat([torch.bmm(corners_of_image[:, e : e + 1], weighted)
                                  for e in range(corners_of_image.shape[1])], dim=1)
            per_cell = per_cell.view(rows + 1, cols + 1, -1, patch, patch).permute(2, 0, 3, 1, 4)
            full = per_cell.reshape(-1, (rows + 1) * patch, (cols + 1) * patch)
            members.append(rows_of_image)
            logits.append(full[:, lead : lead + rows * patch, lead : lead + cols * patch])
        if len(logits) == 1:
            return logits[0]
        order = torch.cat(members)
        logits = torch.cat(logits)
        # Expressions grouped by image in image order (as the training collator makes them) need no reordering.
        return logits if torch.equal(order, torch.arange(len(order), device=order.device)) else logits[order.argsort()]

    def _mask_logits(self, hidden_states, grid, patch, per_patch):
        """The mask head's logits plus `per_patch` (one logit per patch, repeated over its pixels), at full size."""
        rows, cols = grid
        batch = hidden_states.shape[0]
        head = self.projection(hidden_states)
        if self.config.mask_head_type == "pixel_shuffle":
            # Every token predicts its own patch x patch block of logits; its patch logit is added to the block.
            head = (head + per_patch[..., None]).view(batch, rows, cols, patch, patch).permute(0, 1, 3, 2, 4)
            return head.reshape(batch, rows * patch, cols * patch)
        coarse = head.view(batch, 1, rows, cols)
        logits = F.interpolate(coarse, size=(rows * patch, cols * patch), mode="bilinear", align_corners=False)[:, 0]
        blocks = logits.view(batch, rows, patch, cols, patch) + per_patch.view(batch, rows, 1, cols, 1)
        return blocks.view(batch, rows * patch, cols * patch)

    def _alignment_per_patch(self, decoded, sentence_key):
        """
        Text-to-pixel alignment: one logit per patch, `<W_v h_patch + b_v, t> / sqrt(width)` with
        `t = alignment_text_projection(sentence)`. Computed as `<h_patch, W_v^T t> + <b_v, t>`: the sentence is
        projected once instead of every patch token (`expressions x tokens x width x width` multiply-adds). Every
        product is an elementwise one summed over one axis, row by row, not a matrix product whose kernel (and so
        its rounding) may change with the number of expressions: an expression's logits do not depend on the others.
        """
        projection = self.alignment_visual_projection
        text = self.alignment_text_projection(sentence_key)
        key = (text[:, :, None] * projection.weight).sum(1)  # (expressions, width): W_v^T t
        per_patch = (decoded * key[:, None, :]).sum(-1) + (text * projection.bias).sum(-1)[:, None]
        return per_patch / math.sqrt(projection.out_features)


class UniRESPreTrainedModel(PreTrainedModel):
    config_class = UniRESConfig
    config: UniRESConfig
    base_model_prefix = "unires"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["CLIPEncoderLayer", "CLIPTextEmbeddings", "CLIPVisionEmbeddings", "UniRESDecoderLayer"]

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, UniRESGroupTokens):
            # Same scale as CLIP's class embedding: the tokens go through CLIP's pre-layernorm like the patches.
            std = module.low.shape[-1] ** -0.5 if module.low is not None else module.high.shape[-1] ** -0.5
            for tokens in (module.low, module.high):
                if tokens is not None:
                    init.normal_(tokens, mean=0.0, std=std)
        elif isinstance(module, UniRESRegionFilter):
            init.zeros_(module.score_bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)

    @torch.no_grad()
    def initialize_weights(self):
        # The CLIP towers are transformers' own models: initialise them (i.e. what a checkpoint left missing) by their
        # own `initialize_weights`, i.e. CLIPPreTrainedModel._init_weights under CLIP's rules. Reached from this model
        # instead, the custom-code rule of transformers would mark CLIPAttention and CLIPMLP (no parameters of their
        # own) as initialised before CLIP's scheme reaches their projections, which would keep a plain N(0, 0.02).
        # After the towers' own initialisation (at construction) this does nothing: their modules are marked done.
        vision_tower = getattr(getattr(self, "vision_encoder", None), "vision_model", None)
        for tower in (vision_tower, getattr(self, "text_model", None)):
            if isinstance(tower, PreTrainedModel):
                tower.initialize_weights()
        super().initialize_weights()


class UniRESModel(UniRESPreTrainedModel):
    r"""
    UniRES, composed as transformers' `SamModel` is: a vision encoder ([`UniRESVisionEncoder`]: CLIP's vision tower
    with the low/high-level group tokens), the CLIP text tower (`text_model`, the "prompt" encoder), a decoder
    ([`UniRESDecoder`]: projections, language-guided region filters, two-stage vision-language decoder) and a mask head
    ([`UniRESMaskHead`]).

    The CLIP towers are transformers' `CLIPVisionModel` (`vision_encoder.vision_model`) and `CLIPTextModel`
    (`text_model`); every other parameter (group tokens, projections, filter, decoder, head) lives outside them, so
    optimiser groups can be split by the `vision_encoder.vision_model.` / `text_model.` prefixes.

    One image encoding serves many expressions: `get_image_embeddings(pixel_values)` once, then
    `forward(image_embeddings=..., input_ids=..., image_indices=...)`. For inference on a CPU,
    `enable_fast_inference(model)` (`fast_inference_unires.py`, used by the pipeline) gives the layers faster
    inference-only forwards with the same results.
    """

    def __init__(self, config: UniRESConfig):
        super().__init__(config)
        self.vision_encoder = UniRESVisionEncoder(config)
        self.text_model = CLIPTextModel._from_config(config.text_config)
        self.decoder = UniRESDecoder(config)
        self.mask_head = UniRESMaskHead(config)
        self.gradient_checkpointing = False
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """
        `PreTrainedModel.save_pretrained`, and the checkpoint carries its pipeline as remote code: `config.json` gets
        the `custom_pipelines` entry that `Pipeline.save_pretrained` writes for a registered pipeline, and (through
        the relative import below, which transformers' `custom_object_save` follows like any other)
        `pipeline_unires.py` is copied beside this file, pushes included. `pipeline(TASK, model=folder_or_hub_id,
        trust_remote_code=True)` then works where this package is not installed.
        """
        from .pipeline_unires import custom_pipelines_entry

        stored = self.config.__dict__.get("custom_pipelines") or {}
        self.config.custom_pipelines = {**stored, **custom_pipelines_entry()}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @property
    def vision_model(self) -> CLIPVisionModel:
        """The CLIP vision tower, `vision_encoder.vision_model` (where composite transformers models keep theirs)."""
        return self.vision_encoder.vision_model

    @classmethod
    def from_clip(cls, name_or_path, clip_kwargs: dict | None = None, **config_overrides) -> "UniRESModel":
        """A UniRES model whose vision and text towers are a `CLIPModel` checkpoint's, weights copied unchanged: see
        `convert_clip_unires.from_clip` for the arguments."""
        from .convert_clip_unires import from_clip

        return from_clip(cls, name_or_path, clip_kwargs, **config_overrides)

    def get_input_embeddings(self) -> nn.Module:
        """The text tower's token embedding: what `resize_token_embeddings` resizes (see `fit_to_tokenizer`)."""
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.text_model.set_input_embeddings(value)

    def get_image_embeddings(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """
        Encode images once, independently of any text.

        Returns a tensor `(num_images, num_patches + num_group_tokens_used, vision_hidden_size)`: the patch tokens
        (no CLS), then the low-level group tokens (taken out at `group_insert_layer`), then the high-level ones.
        Position embeddings are interpolated when the image size differs from `config.image_size`.
        """
        return self.vision_encoder(pixel_values).image_embeddings

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        image_embeddings: torch.FloatTensor | None = None,
        image_indices: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        original_sizes: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        output_image_embeddings: bool = False,
        output_group_tokens: bool = False,
        return_dict: bool | None = None,
    ) -> UniRESOutput | tuple:
        r"""
        Args:
            pixel_values (`(num_images, 3, H, W)`): images. Given with `image_embeddings`, they are read by the pixel
                branch alone (and required when `config.pixel_decoder_channels > 0`), so code that passes both works
                with every UniRES model.
            input_ids, attention_mask (`(num_expressions, text_length)`): the tokenised expressions.
            image_embeddings (`(num_images, tokens, hidden)`): output of `get_image_embeddings`, to reuse one image
                encoding for many expressions (square patch grid assumed).
            image_indices (`(num_expressions,)`, *optional*): image row of each expression. By default the identity
                when the counts match, or every expression on the single image.
            labels (`(num_expressions, H, W)`, float or bool): ground-truth masks at input resolution; gives `loss`.
            original_sizes (`(num_images, 2)`, *optional*): what the processor returns beside the model inputs;
                accepted and unused here, so that `model(**processor(...))` works (`post_process_masks` takes it).
            output_attentions, output_hidden_states (`bool`, *optional*): return the attention maps (region filter and
                decoder) / the hidden states of the vision tower, the text tower and the decoder (see
                [`UniRESOutput`]); default: the config's.

        There is no `**kwargs`: a misspelled argument (`attention_masks=`) is a `TypeError` naming it, not ignored.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_attentions, output_hidden_states = self._output_flags(output_attentions, output_hidden_states)
        check_model_inputs(self.config, pixel_values, input_ids, image_embeddings)
        vision_hidden_states = None
        if image_embeddings is None:
            vision_outputs = self.vision_encoder(pixel_values, output_hidden_states=output_hidden_states)
            image_embeddings, vision_hidden_states = vision_outputs.image_embeddings, vision_outputs.hidden_states
            patch = self.config.vision_config.patch_size
            grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
        else:
            grid = grid_of_image_embeddings(self.config, image_embeddings, pixel_values)
        image_indices = resolve_image_indices(
            image_indices, image_embeddings.shape[0], input_ids.shape[0], image_embeddings.device
        )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)

        visual, low, high = self.vision_encoder.split_embeddings(image_embeddings)
        logits, text_outputs, decoder_outputs = self._decode(
            visual, low, high, input_ids, attention_mask, image_indices, grid, pixel_values,
            output_attentions, output_hidden_states,
        )
        output = UniRESOutput(
            loss=self.compute_loss(logits, labels) if labels is not None else None,
            logits=logits,
            image_embeddings=image_embeddings if output_image_embeddings else None,
            group_tokens=decoder_outputs.group_tokens if output_group_tokens else None,
            group_token_scores=decoder_outputs.group_token_scores if output_group_tokens else None,
            vision_hidden_states=vision_hidden_states,
            text_hidden_states=text_outputs.hidden_states if output_hidden_states else None,
            decoder_hidden_states=decoder_outputs.hidden_states,
            region_filter_attentions=decoder_outputs.region_filter_attentions,
            decoder_attentions=decoder_outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    def _decode(self, visual, low, high, input_ids, attention_mask, image_indices, grid, pixel_values,
                output_attentions, output_hidden_states):
        """The text side, the decoder and the mask head for some expressions: `(logits, text outputs, decoder
        outputs)`."""
        text_outputs = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=output_hidden_states
        )
        decoder_outputs = self.decoder(
            visual, low, high, text_outputs.last_hidden_state, attention_mask, image_indices, grid,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states,
        )
        logits = self.mask_head(
            decoder_outputs.last_hidden_state, decoder_outputs.sentence_embedding, grid, pixel_values, image_indices
        )
        return logits, text_outputs, decoder_outputs

    def _output_flags(self, output_attentions, output_hidden_states):
        """`(output_attentions, output_hidden_states)` as bools, the config's where not given."""
        output_attentions = bool(output_attentions if output_attentions is not None else self.config.output_attentions)
        if output_hidden_states is not None and not isinstance(output_hidden_states, bool):
            # transformers' models that record outputs by hook also take a list of layer indices; UniRES does not.
            raise TypeError(f"output_hidden_states must be a bool, got {output_hidden_states!r}")
        output_hidden_states = bool(
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return output_attentions, output_hidden_states

    def compute_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`bce_loss_weight * BCE + dice_loss_weight * Dice`, with `labels` (float or bool) shaped like `logits`."""
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels have shape {tuple(labels.shape)} but the logits are {tuple(logits.shape)}: give one mask per "
                "expression at the model input resolution (UniRESProcessor resizes ground-truth masks)"
            )
        logits = logits.float()
        labels = labels.to(device=logits.device, dtype=torch.float32)
        bce = F.binary_cross_entropy_with_logits(logits, labels)
        return self.config.bce_loss_weight * bce + self.config.dice_loss_weight * dice_loss(logits, labels)


__all__ = [
    "UniRESDecoder",
    "UniRESMaskHead",
    "UniRESModel",
    "UniRESOutput",
    "UniRESPreTrainedModel",
    "UniRESVisionEncoder",
]
