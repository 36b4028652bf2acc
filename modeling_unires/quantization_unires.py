"""int8 UniRES on the CPU through transformers' own quantization API (`TorchAoConfig`, torchao).

    from modeling_unires.quantization_unires import quantization_config
    model = AutoModel.from_pretrained(folder, quantization_config=quantization_config("int8"))
    segmenter = pipeline("referring-expression-segmentation", model=folder,
                         model_kwargs={"quantization_config": quantization_config("int8")})

"int8" is torchao's dynamic int8 activations with int8 per-row weights on every `nn.Linear` (CLIP towers, decoder,
mask head); attention itself, layer norms and the group tokens stay in float. "int8-weights" quantizes the weights
only (smaller, no faster on a CPU). torchao (`pip install "unires[quantize]"`) is imported only here, on demand.
"""

QUANTIZE_CHOICES = ("none", "int8", "int8-weights")


def quantization_config(name: str | None):
    """The `quantization_config` for `from_pretrained` named by `name` (one of `QUANTIZE_CHOICES`); None for "none"."""
    if name in (None, "none"):
        return None
    if name not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize={name!r} is invalid: expected one of {QUANTIZE_CHOICES}")
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    except ImportError as error:
        raise ImportError(
            f"--quantize {name} needs torchao: pip install 'unires[quantize]' (or pip install torchao)"
        ) from error
    from transformers import TorchAoConfig

    scheme = Int8DynamicActivationInt8WeightConfig() if name == "int8" else Int8WeightOnlyConfig()
    return TorchAoConfig(scheme)


__all__ = ["QUANTIZE_CHOICES", "quantization_config"]
