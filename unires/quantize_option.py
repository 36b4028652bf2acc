"""The `--quantize` option of the inference scripts (`examples/predict.py`, `examples/app.py`).

Importable without torch or transformers, so that `--help` and a mistyped option answer at once: the scripts read
their command line before any heavy import. The names are `modeling_unires.quantization_unires.QUANTIZE_CHOICES`,
which `quantization_config(name)` turns into a `quantization_config`; importing that module loads transformers, so
the names are written here again and tests/unires/test_quantize_option.py keeps the two equal.
"""

QUANTIZE_CHOICES = ("none", "int8", "int8-torchao", "int8-weights")

QUANTIZE_HELP = (
    "int8: int8 weights and 8-bit activations (one range per token, so a mask does not depend on what else is in "
    "the call) on oneDNN's int8 CPU kernel, about 1.7x faster on a CPU with VNNI (a torchao config; pip install "
    "'unires[quantize]'); int8-torchao: torchao's own int8 scheme (fast under "
    "torch.compile only); int8-weights: int8 weights, float compute (smaller, not faster)."
)


def add_quantize_argument(parser) -> None:
    """`--quantize {none,int8,int8-torchao,int8-weights}` (default none) on an argparse parser."""
    parser.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none", help=QUANTIZE_HELP)


__all__ = ["QUANTIZE_CHOICES", "QUANTIZE_HELP", "add_quantize_argument"]
