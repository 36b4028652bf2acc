"""A torchao config that runs every `nn.Linear` as an int8 x int8 matrix product, each activation row on its own.

`Int8RowwiseLinearConfig` is an `AOBaseConfig` with its own module handler, so `quantize_` and transformers'
`TorchAoConfig(quant_type=Int8RowwiseLinearConfig())` apply it like any torchao config. The handler quantizes a
Linear's weight symmetrically to int8, one scale per output row, and replaces the weight by an `Int8RowwiseWeight`.
`F.linear(x, weight, bias)` on that weight then:

1. quantizes the activation per row of `x.reshape(-1, in_features)` (per token): symmetric int8, scale = the row's
   largest magnitude / 127;
2. multiplies in int8 with int32 accumulation, and converts each sum to float32 times its weight row's scale: on
   oneDNN's prepacked kernel (`onednn::qlinear_pointwise`, u8 x s8 with AVX-512 VNNI / AMX int8 where the CPU has
   them, the activations offset by 128 into uint8), or, on a torch without it, `torch._int_mm` and a
   multiplication; both give the same bits;
3. multiplies by the activation row's scale and adds the bias, in float32.

Why per row: a row's output depends on that row alone, bit for bit. Its scale is a max over the row (exact in any
order), the int8 product is exact integer arithmetic whatever blocking the kernel picks for the batch's size, and the
rescaling is elementwise, each step one correctly rounded multiplication or addition (never a fused multiply-add,
which a vectorised body and a scalar tail could round differently). So a mask is the same whether its
expression is alone, among a hundred, or in another chunk, and an image's masks do not depend on the images beside
it. PyTorch's `quantized::linear_dynamic`, used here before, takes one activation scale for the whole call: every
output then depended on the largest activation anywhere in the batch (issue 28).

Why not torchao's `Int8DynamicActivationInt8WeightConfig`, which also scales per token: in eager mode its
quantization and rescaling run as a dozen separate ops per Linear, which cost as much as the int8 product saves
(torch.compile fuses them); the ops here (max and min of each row, scale, round and convert; row scale and bias) cost
about a tenth of the product at the paper's sizes.

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

# A row whose largest magnitude is below this quantizes to zeros (and 127 / it stays finite in float32).
_SMALLEST_ABSMAX = 1e-30


@functools.cache
def onednn_kernel_available() -> bool:
    """Whether this torch has oneDNN's int8 linear (`onednn::qlinear_pointwise`) and it computes what `_int_mm` does."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")):
        return False
    try:
        generator = torch.Generator().manual_seed(0)
        weight = torch.randint(-127, 128, (8, 16), dtype=torch.int8, generator=generator)
        rows = torch.randint(-127, 128, (3, 16), dtype=torch.int8, generator=generator)
        scale = torch.rand(8, generator=generator)
        packed = torch.ops.onednn.qlinear_prepack(weight, None)
        got = _onednn_product(rows.clone(), packed, scale, torch.zeros(8, dtype=torch.long))
        return torch.equal(got, _int_mm_product(rows, weight, scale))
    except (RuntimeError, NotImplementedError):  # a build without the kernel for this CPU
        return False


def _onednn_product(quantized, packed, scale, zero_points):
    """`float32(quantized @ int8 weight.T) * scale` on oneDNN's u8s8 kernel; `quantized` (int8) is overwritten."""
    # int8 v as uint8 v + 128 (flipping the sign bit of two's complement), with 128 as the kernel's zero point.
    offset = quantized.view(torch.uint8).bitwise_xor_(0x80)
    return torch.ops.onednn.qlinear_pointwise(offset, 1.0, 128, packed, scale, zero_points, None, 1.0, 0,
                                              torch.float32, "none", [], "")


def _int_mm_product(quantized, int8_weight, scale):
    """`float32(quantized @ int8_weight.T) * scale` with `torch._int_mm`."""
    return torch._int_mm(quantized, int8_weight.t()).float().mul_(scale)


@dataclass
class Int8RowwiseLinearConfig(AOBaseConfig):
    """Int8 activations, one scale per row (token), x int8 weights, one scale per output row; float32 bias and output.

    Each output row depends on its input row alone, bit for bit, whatever else is in the call.
    """


def quantize_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(int8 rows, float32 scales [rows, 1])`: symmetric int8, each row of the 2-D float32 `rows` on its own scale.

    Every step is per row or per element (max, min, multiply, round), so a row's result never depends on the others.
    """
    absmax = torch.maximum(rows.amax(dim=1, keepdim=True), rows.amin(dim=1, keepdim=True).neg_())
    absmax = absmax.clamp_min_(_SMALLEST_ABSMAX)
    quantized = torch.mul(rows, 127.0 / absmax).round_().to(torch.int8)
    return quantized, absmax / 127.0


class Int8RowwiseWeight(torch.Tensor):
    """A Linear weight (float32 to the outside, shape [out, in]) held as int8 with one float32 scale per output row.

    `F.linear(x, weight, bias)` runs the row-wise int8 product (see the module's docstring); any other operation sees
    the dequantized weight.
    """

    int8: torch.Tensor  # [out, in], torch.int8
    scale: torch.Tensor  # [out], float32
    packed: torch.Tensor | None  # the int8 weight prepacked for oneDNN's kernel; None: `torch._int_mm` is used

    @staticmethod
    def __new__(cls, int8, scale, packed=None):
        return torch.Tensor._make_wrapper_subclass(cls, int8.shape, dtype=torch.float32, device="cpu",
                                                   requires_grad=False)

    def __init__(self, int8, scale, packed=None):
        self.int8 = int8
        self.scale = scale
        self.packed = packed
        self._zero_points = torch.zeros(int8.shape[0], dtype=torch.long)

    @classmethod
    def from_float(cls, weight: torch.Tensor) -> Int8RowwiseWeight:
        weight = weight.detach().float().cpu()
        int8, scale = quantize_rows(weight)
        packed = torch.ops.onednn.qlinear_prepack(int8, None) if onednn_kernel_available() else None
        return cls(int8, scale.squeeze(1), packed)

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
            quantized, row_scale = quantize_rows(rows)
            # float(int32) x weight scale, then x row scale, then + bias: one rounding each, the same everywhere.
            if self.packed is not None:
                out = _onednn_product(quantized, self.packed, self.scale, self._zero_points)
            else:
                out = _int_mm_product(quantized, self.int8, self.scale)
            out.mul_(row_scale)
            if bias is not None:
                out.add_(bias.detach().float())
        return out.reshape(*x.shape[:-1], out_features).to(x.dtype)

    def __repr__(self):
        return f"Int8RowwiseWeight(shape={tuple(self.shape)})"

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
                return Int8RowwiseWeight(source.int8, source.scale, source.packed)
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


__all__ = ["Int8RowwiseLinearConfig", "Int8RowwiseWeight", "onednn_kernel_available", "quantize_rows"]
