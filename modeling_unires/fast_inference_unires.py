"""Inference-only forwards for UniRES's layers, swapped in on request: `enable_fast_inference(model)`.

`modeling_unires.py` holds one forward per layer, the one training uses. This module holds the CPU inference tuning
beside it, as transformers' `kernels` integration (`kernelize`) gives a layer a faster forward while its class keeps
the plain one: `enable_fast_inference` binds a fast forward to each UniRES layer of a model instance, in place. The
weights, the state dict, `save_pretrained` and the class are unchanged; `disable_fast_inference` gives the plain
forwards back.

    model = UniRESModel.from_pretrained(folder).eval()
    model = enable_fast_inference(model)                # the pipeline does this on a CPU by default
    with torch.inference_mode():
        logits = model(**inputs).logits                 # equal to the plain model's (masks bit-equal)

What the fast forwards do (all at inference only, with the same results to float rounding):
- the decoder's position encodings are folded with the biases of the q/k projections into one table per projection,
  kept until the weights or the token grid change (keyed on the tensors' storage and version), and self-attention's
  q, k and v come out of one matrix product;
- the region filter's cross-attention queries are made once per image, not once per expression;
- GELU (the decoder's) and quick GELU (the CLIP towers', as `silu(1.702 x) / 1.702`) and the residual sums are
  written into the buffers the layer just made: a few large buffers fewer per layer;
- expressions go through the text tower, the decoder and the mask head in passes (`max_expressions_per_pass`, and on
  a CPU at most `cpu_tokens_per_pass` expression x patch tokens): memory stays bounded whatever their number, and on
  a CPU a pass's buffers stay small enough not to be page-faulted in again at every layer (at 480x480, 8 expressions
  in one pass cost about 90,000 page faults, 4% of the time) while a pass's fixed cost (the text tower's and the mask
  head's calls) is paid once for small models (16 expressions of the demo model in 4 passes took 1.5x one pass);
- quantized projections (int8 `Linear`s, whose weight is no plain matrix) are applied as modules where the plain
  mask head reads the weight (the alignment logit), and are never concatenated.

Under autograd the fast layers are not used: with `torch.is_grad_enabled()`, every fast forward calls its layer's
plain forward, so training, fine-tuning and gradient checks run the definition of `modeling_unires.py` whether or not
fast inference was enabled (a model in training mode is never split into passes either).

This file travels beside saved checkpoints with the pipeline that imports it (remote code): it imports only `torch`.
Layers are recognised by class name, so that a model loaded as remote code and this module installed as a package
(or the reverse) work together.
"""

from dataclasses import dataclass
from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

# The methods each kind of layer gets (attribute name -> fast function below), by the layer's class name.
_FAST_METHODS = {}


@dataclass
class FastInferenceOptions:
    """How many expressions a pass holds: at most `max_expressions_per_pass` (`None` or 0: no limit), and on a CPU
    at most `cpu_tokens_per_pass` expression x patch tokens (`None` or 0: no further limit)."""

    max_expressions_per_pass: int | None = 32
    cpu_tokens_per_pass: int | None = 3600

    def __post_init__(self):
        for name in ("max_expressions_per_pass", "cpu_tokens_per_pass"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name}={value!r} is invalid: expected a positive int, or None / 0 for no limit")

    def expressions_per_pass(self, device: torch.device, patch_tokens: int) -> int | None:
        """Expressions per pass on `device`, each over `patch_tokens` tokens of its image; `None`: all at once."""
        limits = [self.max_expressions_per_pass]
        if device.type == "cpu" and self.cpu_tokens_per_pass:
            limits.append(max(1, self.cpu_tokens_per_pass // max(1, patch_tokens)))
        limits = [limit for limit in limits if limit]
        return min(limits) if limits else None


def enable_fast_inference(
    model: nn.Module, max_expressions_per_pass: int | None = 32, cpu_tokens_per_pass: int | None = 3600
) -> nn.Module:
    """Give `model` (a `UniRESModel`) its layers' inference forwards, in place, and return it. Calling it again sets
    new pass limits (see [`FastInferenceOptions`])."""
    if type(model).__name__ != "UniRESModel":
        raise TypeError(f"enable_fast_inference takes a UniRESModel, got {type(model).__name__}")
    model.fast_inference_options = FastInferenceOptions(max_expressions_per_pass, cpu_tokens_per_pass)
    for module in model.modules():
        for attribute, function in _fast_methods(module).items():
            setattr(module, attribute, MethodType(function, module))
    return model


def disable_fast_inference(model: nn.Module) -> nn.Module:
    """Undo [`enable_fast_inference`]: every layer of `model` runs its plain forward again."""
    for module in model.modules():
        for attribute in _fast_methods(module):
            module.__dict__.pop(attribute, None)
        module.__dict__.pop("_fast_projection_cache", None)
    model.__dict__.pop("fast_inference_options", None)
    return model


def is_fast_inference_enabled(model: nn.Module) -> bool:
    return "fast_inference_options" in model.__dict__


def _fast_methods(module: nn.Module) -> dict:
    name = type(module).__name__
    if name == "QuickGELUActivation":
        return {"forward": _quick_gelu_in_place}
    return _FAST_METHODS.get(name, {})


def _plain_linear(layer: nn.Module) -> bool:
    """A plain `nn.Linear` whose weight is an ordinary matrix (not a quantized module or tensor)."""
    return type(layer) is nn.Linear and type(layer.weight) is nn.Parameter and layer.bias is not None


# ---------------------------------------------------------------------------------------------------- activations


def _quick_gelu_in_place(self, x):
    """CLIP's quick GELU `x * sigmoid(1.702 x)` as `silu(1.702 x) / 1.702` in place on its input (the MLP's fresh
    `fc1` output): three passes over that buffer and no new one, where transformers' makes one in each (5% of the
    ViT-B/16 tower's time at 352x352 on one CPU core)."""
    if torch.is_grad_enabled():
        return type(self).forward(self, x)
    return F.silu(x.mul_(1.702), inplace=True).div_(1.702)


def _mlp_forward(self, x):
    """The decoder MLP with its GELU written over `fc1`'s output: one 4x-wide buffer fewer."""
    if torch.is_grad_enabled():
        return type(self).forward(self, x)
    return self.fc2(self.dropout(torch.ops.aten.gelu_(self.fc1(x))))


# ---------------------------------------------------------------------------------------------------- attention


def positioned_projection(attention, positions: torch.Tensor, names=("q",)) -> tuple:
    """
    `(weight, bias)` of the named projections of `attention` (`"q"`, `"k"`, `"v"`) stacked, whose bias is a
    `(tokens, width)` table: `b + positions @ W.T` for q and k, `b` for v. `F.linear(normed, weight) + bias` is then
    the projections of `normed + positions` (of `normed` for v) in one product. Kept on the module until the weights
    (their storage or version) or the positions' shape change.
    """
    layers = [{"q": attention.q_proj, "k": attention.k_proj, "v": attention.v_proj}[name] for name in names]
    key = (tuple(positions.shape), positions.dtype, positions.device, names,
           tuple((t.data_ptr(), t._version) for layer in layers for t in (layer.weight, layer.bias)))
    cached = attention.__dict__.get("_fast_projection_cache")
    if cached is None or cached[0] != key:
        weight = torch.cat([layer.weight for layer in layers])
        biases = [
            layer.bias.expand(len(positions), -1) if name == "v" else F.linear(positions, layer.weight, layer.bias)
            for name, layer in zip(names, layers)
        ]
        cached = (key, (weight, torch.cat(biases, dim=-1)))
        attention.__dict__["_fast_projection_cache"] = cached
    return cached[1]


def _projections_are_plain(attention) -> bool:
    return all(_plain_linear(layer) for layer in (attention.q_proj, attention.k_proj, attention.v_proj))


def _self_projections(attention, normed, positions):
    """`(q, k, v)` of self-attention over `normed` with `positions` added to the queries and keys."""
    if positions is None or not _projections_are_plain(attention):
        located = normed if positions is None else normed + positions
        return attention.q_proj(located), attention.k_proj(located), attention.v_proj(normed)
    weight, bias = positioned_projection(attention, positions, ("q", "k", "v"))
    return F.linear(normed, weight).add_(bias).chunk(3, dim=-1)


def cross_queries_of(layer, hidden_states, positions=None):
    """A decoder layer's projected cross-attention queries: `q_proj(cross_attn_norm(hidden_states) + positions)`."""
    queries = layer.cross_attn_norm(hidden_states)
    if positions is None:
        return layer.cross_attn.q_proj(queries)
    if not _projections_are_plain(layer.cross_attn):
        return layer.cross_attn.q_proj(queries + positions)
    weight, bias = positioned_projection(layer.cross_attn, positions, ("q",))
    return F.linear(queries, weight).add_(bias)


def _decoder_layer_forward(
    self, hidden_states, memory, memory_mask=None, output_attentions=False, positions=None, cross_queries=None
):
    """`UniRESDecoderLayer.forward` at inference. `cross_queries`: the cross-attention's projected queries when made
    beforehand (`cross_queries_of`), e.g. once per image for tokens that do not depend on the expression."""
    if torch.is_grad_enabled():
        if cross_queries is not None:
            raise RuntimeError("cross_queries are an inference-only input of the fast decoder layer")
        return type(self).forward(self, hidden_states, memory, memory_mask, output_attentions, positions)
    if self.self_attn is not None:
        projected = _self_projections(self.self_attn, self.self_attn_norm(hidden_states), positions)
        attended = self.self_attn.attend(*projected)[0]
        hidden_states = self.dropout(attended).add_(hidden_states)
    if cross_queries is None:
        cross_queries = cross_queries_of(self, hidden_states, positions)
    memory = self.memory_norm(memory)
    keys, values = self.cross_attn.k_proj(memory), self.cross_attn.v_proj(memory)
    attended, weights = self.cross_attn.attend(cross_queries, keys, values, memory_mask, output_attentions)
    hidden_states = self.dropout(attended).add_(hidden_states)
    hidden_states = self.dropout(self.mlp(self.mlp_norm(hidden_states))).add_(hidden_states)
    return hidden_states, weights


def _region_filter_forward(
    self, group_tokens, text_tokens, text_mask, sentence, output_attentions=False, image_indices=None
):
    """`UniRESRegionFilter.forward` at inference: with per-image `group_tokens`, the cross-attention's queries (which
    do not depend on the expression) are made once per image."""
    if torch.is_grad_enabled() or image_indices is None:
        return type(self).forward(self, group_tokens, text_tokens, text_mask, sentence, output_attentions,
                                  image_indices)
    cross_queries = cross_queries_of(self.layer, group_tokens).index_select(0, image_indices)
    group_tokens = group_tokens.index_select(0, image_indices)
    group_tokens, weights = _decoder_layer_forward(
        self.layer, group_tokens, text_tokens, text_mask, output_attentions, cross_queries=cross_queries
    )
    return (*self.keep_relevant(group_tokens, sentence), weights)



# ---------------------------------------------------------------------------------------------------- the model


def _decode_in_passes(self, visual, low, high, input_ids, attention_mask, image_indices, grid, pixel_values,
                      output_attentions, output_hidden_states):
    """`UniRESModel._decode` over at most `fast_inference_options.expressions_per_pass` expressions at a time; the
    image side (`visual`, `low`, `high`, `pixel_values`) is shared by every pass."""
    plain = type(self)._decode
    args = (output_attentions, output_hidden_states)
    chunk = self.fast_inference_options.expressions_per_pass(visual.device, visual.shape[1])
    if (
        torch.is_grad_enabled() or self.training or not chunk or input_ids.shape[0] <= chunk
        or output_attentions or output_hidden_states
    ):
        return plain(self, visual, low, high, input_ids, attention_mask, image_indices, grid, pixel_values, *args)
    pieces = [
        plain(self, visual, low, high, input_ids[start : start + chunk], attention_mask[start : start + chunk],
              image_indices[start : start + chunk], grid, pixel_values, *args)
        for start in range(0, input_ids.shape[0], chunk)
    ]
    logits = torch.cat([piece[0] for piece in pieces])
    decoder_outputs = concatenated_outputs([piece[2] for piece in pieces], ("group_tokens", "group_token_scores"))
    return logits, pieces[0][1], decoder_outputs


def concatenated_outputs(pieces: list, names: tuple):
    """The decoder outputs of consecutive passes joined along the expressions, for the fields `names` (the others
    `None`). Read as attributes: a `ModelOutput` holds no key for a field that is `None` (no group tokens), so
    `piece[name]` would raise `KeyError`."""
    joined = {}
    for name in names:
        values = [getattr(piece, name) for piece in pieces]
        joined[name] = None if values[0] is None else torch.cat(values)
    return type(pieces[0])(**joined)


_FAST_METHODS.update({
    "UniRESMLP": {"forward": _mlp_forward},
    "UniRESDecoderLayer": {"forward": _decoder_layer_forward},
    "UniRESRegionFilter": {"forward": _region_filter_forward},
    "UniRESModel": {"_decode": _decode_in_passes},
})


__all__ = [
    "FastInferenceOptions",
    "disable_fast_inference",
    "enable_fast_inference",
    "is_fast_inference_enabled",
]
