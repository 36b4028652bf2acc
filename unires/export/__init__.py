"""Deployment exports of UniRES: two ONNX graphs (image encoder, query decoder) and their ONNX Runtime model.

    from unires.export import export_onnx, ORTModelForReferringSegmentation
    export_onnx(model, processor, "unires-onnx", quantize="int8")
    ort_model = ORTModelForReferringSegmentation.from_pretrained("unires-onnx")

`examples/export.py` is the command line. Needs `onnx`, `onnxscript` (the exporter) and `onnxruntime`
(`pip install "unires[onnx]"`); they are imported on use, so `import unires.export` costs nothing.
"""

_EXPORTS = {
    "export_onnx": "onnx_export",
    "extract_snippet": "onnx_export",
    "snippet": "onnx_export",
    "ORTModelForReferringSegmentation": "modeling_ort",
    "quantize_graphs": "onnx_quantization",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
