"""A torchao config that runs every `nn.Linear` on PyTorch's prepacked dynamic int8 CPU kernel.

`Int8PrepackedLinearConfig` is an `AOBaseConfig` with its own module handler, so `quantize_` and transformers'
`TorchAoConfig(quant_type=Int8PrepackedLinearConfig())` apply it like any torchao config. The handler quantizes a
Linear's weight symmetrically to int8, one scale per output row, packs it for the oneDNN kernel (the one that uses
AVX-512 VNNI / AMX int8 when the CPU has them; fbgemm where oneDNN is absent) and replaces the weight by an
`Int8PrepackedWeight`. `F.linear` on that weight calls `torch.ops.quantized.linear_dynamic`, which quantizes the
activations (one scale per call, uint8), multiplies in int8 and returns float32 in one C++ call: the kernel of
`torch.ao.quantization.quantize_dynamic`, without swapping the module. The bias stays a float parameter of the Linear;
the kernel adds a copy of it packed with the weight on the first call (packed again if the parameter changes).

Why not torchao's `Int8DynamicActivationInt8WeightConfig`: its `torch._int_mm` is fast on this CPU, but in eager mode
its per-token activation quantization and the rescaling run as a dozen separate tensor ops per Linear, which cost as
much as the int8 matmul saves (torch.compile fuses them; eager does not).

The packed weight cannot be written to safetensors (torchao's serialization knows its own tensor types only): a
quantized Linear's `state_dict()`, hence `save_pretrained`, raises a TypeError that says so; save the float model and
quantize at load. Other operations on the weight (`weight * 1`, `weight.sum()`) see the dequantized weight.

Caveat: the kernel takes its weight as a `torch.qint8` quantized tensor, which torch 2.14 deprecates (a UserWarning,
silenced here, says they "will be removed in a future PyTorch release", pytorch/pytorch#184982); when they go, this
module needs another int8 kernel (e.g. `torch.ops.onednn.qlinear_pointwise` with its own activation quantization).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.utils._pytree import tree_map
from torchao.core.config import AOBaseConfig
from torchao.quantization.transform_module import register_quantize_module_handler

_PREFERRED_ENGINES = ("onednn", "fbgemm", "x86", "qnnpack")


def default_engine() -> str:
    """The quantized engine that packs the weights: oneDNN (VNNI / AMX int8 kernels) when this torch has it."""
    supported = torch.backends.quantized.supported_engines
    for engine in _PREFERRED_ENGINES:
        if engine in supported:
            return engine
    raise RuntimeError(f"this torch build has no quantized CPU engine (supported: {supported})")


@dataclass
class Int8PrepackedLinearConfig(AOBaseConfig):
    """Dynamic int8 activations x per-row int8 weights on PyTorch's prepacked CPU kernel (`quantized::linear_dynamic`).

    `engine`: the quantized engine the weights are packed for (None: `default_engine()`, oneDNN when available).
    """

    engine: str | None = None


class Int8PrepackedWeight(torch.Tensor):
    """A Linear weight (float32 to the outside, shape [out, in]) held as an int8 weight prepacked for one CPU engine.

    `F.linear(x, weight, bias)` runs `quantized::linear_dynamic`; any other operation sees the dequantized weight.
    """

    packed: torch.ScriptObject
    engine: str

    @staticmethod
    def __new__(cls, packed, shape, engine):
        return torch.Tensor._make_wrapper_subclass(cls, shape, dtype=torch.float32, device="cpu",
                                                   requires_grad=False)

    def __init__(self, packed, shape, engine):
        self.packed = packed
        self.engine = engine

    @classmethod
    def from_float(cls, weight: torch.Tensor, engine: str | None = None) -> Int8PrepackedWeight:
        engine = engine or default_engine()
        weight = weight.detach().float().cpu()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp_min(torch.finfo(torch.float32).tiny)
        zero_point = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():  # torch 2.14 deprecates quantized tensors: see the caveat above
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*", category=UserWarning)
            qweight = torch.quantize_per_channel(weight, scale.double(), zero_point, 0, torch.qint8)
        return cls(_prepack(qweight, None, engine), weight.shape, engine)

    def int8_weight(self) -> torch.Tensor:
        """The int8 weight as a per-channel quantized tensor (`int_repr()`, `q_per_channel_scales()`)."""
        qweight, _ = torch.ops.quantized.linear_unpack(self.packed)
        return qweight

    def dequantize(self) -> torch.Tensor:
        return self.int8_weight().dequantize()

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        if x.shape[-1] != self.shape[1]:
            raise RuntimeError(f"linear: input's last dimension {x.shape[-1]} != in_features {self.shape[1]}")
        if x.numel() == 0:
            out = x.new_zeros(*x.shape[:-1], self.shape[0], dtype=torch.float32)
            return (out if bias is None else out + bias).to(dtype)
        packed = self.packed if bias is None else self._packed_with(bias)
        return torch.ops.quantized.linear_dynamic(x.float().contiguous(), packed, False).to(dtype)

    def _packed_with(self, bias: torch.Tensor) -> torch.ScriptObject:
        """The weight packed together with `bias` (the kernel adds it), packed again when the bias changes.

        The bias stays the Linear's float parameter (it may be loaded after the weight was quantized); the packed
        copy is keyed by the parameter's identity and version counter.
        """
        key = (id(bias), _version(bias))
        cached = getattr(self, "_bias_cache", None)
        if cached is None or cached[0] != key or cached[1] is not bias:
            with torch.no_grad():
                copy = bias.detach().float().clone()
            cached = (key, bias, _prepack(self.int8_weight(), copy, self.engine))
            self._bias_cache = cached
        return cached[2]

    def __repr__(self):
        return f"Int8PrepackedWeight(shape={tuple(self.shape)}, engine={self.engine!r})"

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear:
            x, weight, bias = _linear_arguments(*args, **kwargs)
            if isinstance(weight, Int8PrepackedWeight) and not isinstance(x, Int8PrepackedWeight):
                return weight.linear(x, bias)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)

    # Views and copies keep the packed weight (it is never modified in place); every other op dequantizes.
    _SHARING_OPS: ClassVar[frozenset] = frozenset({torch.ops.aten.detach.default, torch.ops.aten.alias.default,
                                                   torch.ops.aten.clone.default, torch.ops.aten._to_copy.default})

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in cls._SHARING_OPS and args and isinstance(args[0], Int8PrepackedWeight):
            source = args[0]
            target_dtype = kwargs.get("dtype", torch.float32)
            target_device = torch.device(kwargs.get("device") or "cpu")
            if target_dtype == torch.float32 and target_device.type == "cpu":
                return Int8PrepackedWeight(source.packed, source.shape, source.engine)
        if any(isinstance(a, Int8PrepackedWeight) for a in kwargs.values()) or func._schema.is_mutable and \
                args and isinstance(args[0], Int8PrepackedWeight):
            raise NotImplementedError(f"{func} on an int8 prepacked weight (it is read-only)")
        unpacked = tree_map(lambda a: a.dequantize() if isinstance(a, Int8PrepackedWeight) else a, args)
        return func(*unpacked, **kwargs)

    def __reduce_ex__(self, protocol):
        raise TypeError(_CANNOT_SAVE)


def _prepack(qweight: torch.Tensor, bias: torch.Tensor | None, engine: str) -> torch.ScriptObject:
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine  # the engine that packs is the engine that runs
    try:
        return torch.ops.quantized.linear_prepack(qweight, bias)
    finally:
        torch.backends.quantized.engine = previous


def _version(tensor: torch.Tensor) -> int:
    try:
        return tensor._version
    except RuntimeError:  # an inference tensor has no version counter (and cannot be modified outside inference)
        return -1


def _linear_arguments(input, weight, bias=None):
    return input, weight, bias


_CANNOT_SAVE = ("an int8 UniRES (Int8PrepackedLinearConfig: weights prepacked for PyTorch's CPU int8 kernel) cannot be "
                "saved: save the float model and quantize it when loading, "
                "from_pretrained(folder, quantization_config=quantization_config('int8'))")


def _refuse_state_dict(module, state_dict, prefix, local_metadata):
    raise TypeError(_CANNOT_SAVE)


@register_quantize_module_handler(Int8PrepackedLinearConfig)
def _quantize_linear(module: torch.nn.Module, config: Int8PrepackedLinearConfig) -> torch.nn.Module:
    if isinstance(module.weight, Int8PrepackedWeight):  # a weight shared by two Linears: quantized once
        return module
    weight = Int8PrepackedWeight.from_float(module.weight, config.engine)
    module.weight = torch.nn.Parameter(weight, requires_grad=False)
    module._register_state_dict_hook(_refuse_state_dict)
    return module


__all__ = ["Int8PrepackedLinearConfig", "Int8PrepackedWeight", "default_engine"]
