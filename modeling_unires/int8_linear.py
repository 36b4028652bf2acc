"""A torchao config that runs every `nn.Linear` as an 8-bit integer matrix product, each activation row on its own.

`Int8RowwiseLinearConfig` is an `AOBaseConfig` with its own module handler, so `quantize_` and transformers'
`TorchAoConfig(quant_type=Int8RowwiseLinearConfig())` apply it like any torchao config. The handler quantizes a
Linear's weight symmetrically to int8, one scale per output row, and replaces the weight by an `Int8RowwiseWeight`.
`F.linear(x, weight, bias)` on that weight then:

1. quantizes each row of `x.reshape(-1, in_features)` (each token) on its own: its range [min, max] onto the
   uint8 levels 0..255, `row = scale * q + min`;
2. multiplies `q` by the int8 weight with int32 accumulation, and converts each sum to float32 times its weight
   row's scale: on oneDNN's prepacked u8 x s8 kernel (`onednn::qlinear_pointwise`, AVX-512 VNNI / AMX int8 where
   the CPU has them), or, on a torch without it, `torch._int_mm` (s8 x s8: `q - 128`, the 128 added back exactly
   in int32) and a multiplication; both give the same bits;
3. multiplies by the row's scale, adds the row's minimum times each weight row's sum, and the bias, in float32.

Why per row: a row's output depends on that row alone, bit for bit. Its range is a min and a max over the row (exact
in any order), the integer product is exact whatever blocking the kernel picks for the batch's size, and the
rescaling is elementwise, each step one correctly rounded multiplication or addition (never a fused multiply-add,
which a vectorised body and a scalar tail could round differently). So a mask is the same whether its expression is
alone, among a hundred, or in another inference pass, and an image's masks do not depend on the images beside it.
PyTorch's `quantized::linear_dynamic`, used here before, takes one activation scale for the whole call: every output
then depended on the largest activation anywhere in the call (issue 28). Why the range and not the largest
magnitude: the inputs of the MLPs' second layers (after GELU) hardly go below zero, and a symmetric scale would
spend half the levels on values that do not occur (mask IoU against fp32 0.9919 instead of 0.9948 on images unlike
the training data, demo model).

Why not torchao's `Int8DynamicActivationInt8WeightConfig`, which also scales per token: in eager mode its
quantization and rescaling run as a dozen separate ops per Linear, which cost as much as the int8 product saves
(torch.compile fuses them); the few here cost about a fifth of the product at the paper's sizes.

The int8 weight cannot be written to safetensors (torchao's serialization knows its own tensor types only): a
quantized Linear's `state_dict()`, hence `save_pretrained`, raises a TypeError that says so; save the float model and
quantize at load. Other operations on the weight (`weight * 1`, `weight.sum()`) see the dequantized weight.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.utils._pytree import tree_map
from torchao.core.config import AOBaseConfig
from torchao.quantization.transform_module import register_quantize_module_handler

# A row (of weights or activations) whose spread is below this quantizes to one level, and 1 / it stays finite.
_SMALLEST_SCALE = 1e-30


@dataclass
class Int8RowwiseLinearConfig(AOBaseConfig):
    """8-bit activations, one range per row (token), x int8 weights, one scale per output row; float32 bias and
    output. Each output row depends on its input row alone, bit for bit, whatever else is in the call."""


def quantize_activations(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(uint8 q, scale, minimum)`, the last two `[rows, 1]` float32: each row of the 2-D float32 `rows` on its own,
    `row ~ scale * q + minimum`. Every step is per row or per element, so a row's result never depends on the others.
    """
    minimum = rows.amin(dim=1, keepdim=True)
    scale = ((rows.amax(dim=1, keepdim=True) - minimum) / 255.0).clamp_min_(_SMALLEST_SCALE)
    quantized = torch.sub(rows, minimum).mul_(1.0 / scale).round_().to(torch.uint8)
    return quantized, scale, minimum


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(int8 weight, float32 scale per output row)`: symmetric, `weight ~ scale[:, None] * int8`."""
    scale = (weight.abs().amax(dim=1) / 127.0).clamp_min_(_SMALLEST_SCALE)
    return torch.mul(weight, 1.0 / scale[:, None]).round_().to(torch.int8), scale


@functools.cache
def onednn_kernel_available() -> bool:
    """Whether this torch has oneDNN's int8 linear (`onednn::qlinear_pointwise`) and it computes what `_int_mm` does."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")):
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = Int8RowwiseWeight.from_float(torch.randn(8, 16, generator=generator), use_onednn=False)
        quantized = torch.randint(0, 256, (3, 16), dtype=torch.uint8, generator=generator)
        packed = torch.ops.onednn.qlinear_prepack(weight.int8, None)
        got = _onednn_product(quantized, packed, weight.scale, weight.zero_points)
        return torch.equal(got, _int_mm_product(quantized, weight.int8, weight.scale, weight.int8_sums))
    except (RuntimeError, NotImplementedError):  # a build without the kernel for this CPU
        return False


def _onednn_product(quantized, packed, scale, zero_points):
    """`float32(quantized @ int8 weight.T) * scale`, `quantized` uint8, on oneDNN's u8s8 kernel."""
    return torch.ops.onednn.qlinear_pointwise(quantized, 1.0, 0, packed, scale, zero_points, None, 1.0, 0,
                                              torch.float32, "none", [], "")


def _int_mm_product(quantized, int8_weight, scale, int8_sums):
    """The same with `torch._int_mm` (int8 x int8): `q` is shifted to `q - 128` (flipping the sign bit of uint8 read
    as int8) and `128 * sum(weight row)` added back to the int32 sums, exactly."""
    shifted = torch.bitwise_xor(quantized, 0x80).view(torch.int8)
    return torch._int_mm(shifted, int8_weight.t()).add_(int8_sums, alpha=128).float().mul_(scale)


class Int8RowwiseWeight(torch.Tensor):
    """A Linear weight (float32 to the outside, shape [out, in]) held as int8 with one float32 scale per output row.

    `F.linear(x, weight, bias)` runs the row-wise 8-bit product (see the module's docstring); any other operation
    sees the dequantized weight.
    """

    int8: torch.Tensor  # [out, in], torch.int8
    scale: torch.Tensor  # [out], float32
    packed: torch.Tensor | None  # the int8 weight prepacked for oneDNN's kernel; None: `torch._int_mm` is used

    @staticmethod
    def __new__(cls, int8, scale, packed=None, int8_sums=None):
        return torch.Tensor._make_wrapper_subclass(cls, int8.shape, dtype=torch.float32, device="cpu",
                                                   requires_grad=False)

    def __init__(self, int8, scale, packed=None, int8_sums=None):
        self.int8 = int8
        self.scale = scale
        self.packed = packed
        self.zero_points = torch.zeros(int8.shape[0], dtype=torch.long)  # the weights' (symmetric)
        self.int8_sums = int8.sum(dim=1, dtype=torch.int32) if int8_sums is None else int8_sums
        self.sums = self.int8_sums.float() * scale  # each dequantized weight row's sum: what a row's minimum adds

    @classmethod
    def from_float(cls, weight: torch.Tensor, use_onednn: bool | None = None) -> Int8RowwiseWeight:
        """`use_onednn`: prepack for oneDNN's kernel (None: where `onednn_kernel_available()`), else `_int_mm`."""
        int8, scale = quantize_weight(weight.detach().float().cpu())
        use_onednn = onednn_kernel_available() if use_onednn is None else use_onednn
        return cls(int8, scale, torch.ops.onednn.qlinear_prepack(int8, None) if use_onednn else None)

    def dequantize(self) -> torch.Tensor:
        return self.int8.float() * self.scale[:, None]

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        out_features, in_features = self.shape
        if x.shape[-1] != in_features:
            raise RuntimeError(f"linear: input's last dimension {x.shape[-1]} != in_features {in_features}")
        rows = x.reshape(-1, in_features).float()
        if rows.shape[0] == 0:
            out = rows.new_zeros(0, out_features)
        else:
            quantized, scale, minimum = quantize_activations(rows)
            if self.packed is not None:
                out = _onednn_product(quantized, self.packed, self.scale, self.zero_points)
            else:
                out = _int_mm_product(quantized, self.int8, self.scale, self.int8_sums)
            # W (scale q + minimum) + bias, one rounding per step: the same in every position of every call.
            out.mul_(scale).add_(minimum * self.sums)
            if bias is not None:
                out.add_(bias.detach().float())
        return out.reshape(*x.shape[:-1], out_features).to(x.dtype)

    def __repr__(self):
        kernel = "onednn" if self.packed is not None else "_int_mm"
        return f"Int8RowwiseWeight(shape={tuple(self.shape)}, kernel={kernel!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            x, weight, bias = _linear_arguments(*args, **kwargs)
            if isinstance(weight, Int8RowwiseWeight) and not isinstance(x, Int8RowwiseWeight):
                return weight.linear(x, bias)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    # Views and copies keep the int8 weight (it is never modified in place); every other op dequantizes.
    _SHARING_OPS: ClassVar[frozenset] = frozenset({torch.ops.aten.detach.default, torch.ops.aten.alias.default,
                                                   torch.ops.aten.clone.default, torch.ops.aten._to_copy.default})

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in cls._SHARING_OPS and args and isinstance(args[0], Int8RowwiseWeight):
            source = args[0]
            target_dtype = kwargs.get("dtype", torch.float32)
            target_device = torch.device(kwargs.get("device") or "cpu")
            if target_dtype == torch.float32 and target_device.type == "cpu":
                return Int8RowwiseWeight(source.int8, source.scale, source.packed, source.int8_sums)
        if any(isinstance(a, Int8RowwiseWeight) for a in kwargs.values()) or func._schema.is_mutable and \
                args and isinstance(args[0], Int8RowwiseWeight):
            raise NotImplementedError(f"{func} on an int8 weight (it is read-only)")
        unpacked = tree_map(lambda a: a.dequantize() if isinstance(a, Int8RowwiseWeight) else a, args)
        return func(*unpacked, **kwargs)

    def __reduce_ex__(self, protocol):
        raise TypeError(_CANNOT_SAVE)


def _linear_arguments(input, weight, bias=None):
    return input, weight, bias


_CANNOT_SAVE = ("an int8 UniRES (Int8RowwiseLinearConfig: int8 weights in a tensor type of this package) cannot be "
                "saved: save the float model and quantize it when loading, "
                "from_pretrained(folder, quantization_config=quantization_config('int8'))")


def _refuse_state_dict(module, state_dict, prefix, local_metadata):
    raise TypeError(_CANNOT_SAVE)


@register_quantize_module_handler(Int8RowwiseLinearConfig)
def _quantize_linear(module: torch.nn.Module, config: Int8RowwiseLinearConfig) -> torch.nn.Module:
    if isinstance(module.weight, Int8RowwiseWeight):  # a weight shared by two Linears: quantized once
        return module
    weight = Int8RowwiseWeight.from_float(module.weight)
    module.weight = torch.nn.Parameter(weight, requires_grad=False)
    module._register_state_dict_hook(_refuse_state_dict)
    return module


__all__ = ["Int8RowwiseLinearConfig", "Int8RowwiseWeight", "onednn_kernel_available", "quantize_activations",
           "quantize_weight"]
