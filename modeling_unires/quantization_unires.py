"""int8 UniRES on the CPU through transformers' own quantization API (`TorchAoConfig`, torchao).

    from modeling_unires.quantization_unires import quantization_config
    model = AutoModel.from_pretrained(folder, quantization_config=quantization_config("int8"))
    segmenter = pipeline("referring-expression-segmentation", model=folder,
                         model_kwargs={"quantization_config": quantization_config("int8")})

"int8" is `TorchAoConfig(Int8RowwiseLinearConfig())` (modeling_unires/int8_linear.py): every `nn.Linear` (CLIP
towers, decoder, mask head; not the alignment projection, `NOT_QUANTIZED`) gets int8 weights, one scale per output row, and 8-bit activations, one range per token
(row), multiplied on oneDNN's int8 CPU kernel (AVX-512 VNNI / AMX int8; `torch._int_mm` where torch lacks it) and
rescaled in float32 with the bias; attention itself, layer norms and the group tokens stay in float. Each token's
output depends on that token alone, bit for bit, so an expression's decoding is the same alone and beside any other
expressions or images, in any number of inference passes. Why this and not torchao's own
`Int8DynamicActivationInt8WeightConfig` ("int8-torchao"), which also scales per token: in eager mode torchao
quantizes the activations with a dozen separate tensor ops per Linear, which eat what its int8 matmul saves (about
1.0x the fp32 forward of the paper-size model at 480x480 on one core; torchao reaches 1.5x only under
torch.compile). "int8-weights" quantizes the weights only (smaller, no faster on a CPU).

An "int8" model is for inference on the CPU: it cannot be saved (`save_pretrained` raises); save the float model and
quantize it when loading. torchao (`pip install "unires[quantize]"`) is imported only here, on demand.
"""

QUANTIZE_CHOICES = ("none", "int8", "int8-torchao", "int8-weights")

# Kept in float by every scheme: the mask head's alignment projection is never run on the patch tokens (the model
# folds the sentence into its weight, `<h, W^T t>`), so its weight must stay a plain matrix, and int8 would gain
# nothing there.
NOT_QUANTIZED = ["mask_head.alignment_visual_projection"]


def quantization_config(name: str | None):
    """The `quantization_config` for `from_pretrained` named by `name` (one of `QUANTIZE_CHOICES`); None for "none"."""
    if name in (None, "none"):
        return None
    if name not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize={name!r} is invalid: expected one of {QUANTIZE_CHOICES}")
    try:
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
        )
    except ImportError as error:
        raise ImportError(
            f"--quantize {name} needs torchao: pip install 'unires[quantize]' (or pip install torchao)"
        ) from error
    from transformers import TorchAoConfig

    if name == "int8":
        from .int8_linear import Int8RowwiseLinearConfig

        return TorchAoConfig(Int8RowwiseLinearConfig(), modules_to_not_convert=NOT_QUANTIZED)
    scheme = Int8DynamicActivationInt8WeightConfig() if name == "int8-torchao" else Int8WeightOnlyConfig()
    return TorchAoConfig(scheme, modules_to_not_convert=NOT_QUANTIZED)


__all__ = ["QUANTIZE_CHOICES", "quantization_config"]
