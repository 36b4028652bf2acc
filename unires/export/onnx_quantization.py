"""int8 the ONNX Runtime way: dynamic quantization of both exported graphs.

`quantize_graphs(folder)` runs `onnxruntime.quantization.quantize_dynamic` on `image_encoder.onnx` and
`query_decoder.onnx` with per-channel int8 weights (one scale per output channel of each matrix) and writes
`image_encoder_quantized.onnx` / `query_decoder_quantized.onnx` beside them (optimum's `*_quantized.onnx` naming).
Matrix products (`MatMul`, `Gemm`) are quantized; attention's products between activations, layer norms, softmax, the
convolutions of the pixel branch and the embedding tables stay in float, and so does the mask head's alignment
projection, as in the PyTorch int8 (`modeling_unires.quantization_unires.NOT_QUANTIZED`).

Activations are quantized at run time with one range per tensor (`DynamicQuantizeLinear`): within one call, the
range of a tensor covers every image or expression in it. `ORTModelForReferringSegmentation` therefore runs int8 graphs
one image and one expression per call, so that a mask never depends on the rest of the call.
"""

from __future__ import annotations

from pathlib import Path

from .onnx_export import IMAGE_ENCODER_FILE, QUERY_DECODER_FILE, quantized_name

# Initializer-name fragments of weights kept in float: the alignment projection, whose weight the head folds with the
# sentence (`<h, W^T t>`) rather than applying it to the patches.
NOT_QUANTIZED_WEIGHTS = ("alignment_visual_projection",)
QUANTIZED_OPS = ("MatMul", "Gemm")


def _nodes_to_exclude(model_path: Path) -> list[str]:
    """Names of the matrix-product nodes that read a weight kept in float."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [
        node.name for node in graph.node
        if node.op_type in QUANTIZED_OPS and any(fragment in name for name in node.input
                                                 for fragment in NOT_QUANTIZED_WEIGHTS)
    ]


def quantize_graph(source, destination, per_channel: bool = True) -> Path:
    """Dynamic int8 quantization of one ONNX graph (int8 weights, per channel by default; uint8 activations)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source, destination = Path(source), Path(destination)
    quantize_dynamic(
        source, destination, per_channel=per_channel, weight_type=QuantType.QInt8,
        op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_exclude=_nodes_to_exclude(source),
        extra_options={"MatMulConstBOnly": True},
    )
    return destination


def quantize_graphs(folder, per_channel: bool = True) -> dict:
    """Quantize both graphs of an export folder; returns the `quantized` entry of `onnx_config.json`."""
    folder = Path(folder)
    written = {}
    for key, file_name in (("image_encoder", IMAGE_ENCODER_FILE), ("query_decoder", QUERY_DECODER_FILE)):
        target = quantized_name(file_name)
        quantize_graph(folder / file_name, folder / target, per_channel=per_channel)
        written[key] = target
    return {**written, "method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8",
            "per_channel": per_channel, "activations": "uint8, one range per tensor per call",
            "ops": list(QUANTIZED_OPS), "kept_in_float": list(NOT_QUANTIZED_WEIGHTS)}


__all__ = ["NOT_QUANTIZED_WEIGHTS", "quantize_graph", "quantize_graphs"]
