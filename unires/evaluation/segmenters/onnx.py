"""UniRES exported to ONNX (`examples/export.py`), run by ONNX Runtime: the same path as the `unires` adapter
(processor → model → post_process_masks) with `ORTModelForReferringSegmentation` as the model.

The export folder holds the processor, so `--model` is the folder (or a Hub repository holding one). `device` picks
the execution provider: `cpu` (the default; `CPUExecutionProvider`, tested) or `cuda` (`CUDAExecutionProvider`,
prepared, untested here). The fp32 graphs are read; `quantized=True` (from Python) reads the int8 ones, run one image
and one expression per call.
"""

from __future__ import annotations

from typing import Optional

from .unires import UniRESSegmenter

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


class OnnxSegmenter(UniRESSegmenter):
    """An exported UniRES (`ORTModelForReferringSegmentation`) and its processor as a [`Segmenter`]: `segment` is
    the `unires` adapter's own (the ONNX Runtime model takes the processor's inputs and returns `UniRESModel`'s
    outputs); only loading and the stated conventions differ."""

    model_type = "onnx"
    shares_image_encoding = True

    def __init__(self, model, processor, threshold: Optional[float] = None):
        super().__init__(model, processor, threshold=threshold, fast_inference=False)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: Optional[str] = None, threshold: Optional[float] = None):
        import modeling_unires  # noqa: F401  (registers the processor's Auto classes)
        from modeling_unires import UniRESProcessor

        from ...export.modeling_ort import ORTModelForReferringSegmentation

        kind = (device or "cpu").split(":")[0]
        if kind not in PROVIDERS:
            raise ValueError(f"device={device!r} is invalid for model_type onnx: expected one of {sorted(PROVIDERS)}")
        model = ORTModelForReferringSegmentation.from_pretrained(name_or_path, provider=PROVIDERS[kind])
        processor = UniRESProcessor.from_pretrained(model.model_save_dir)
        return cls(model, processor, threshold=threshold)

    def conventions(self) -> dict:
        return {**super().conventions(), "runtime": f"onnxruntime {self._ort_version()}",
                "providers": list(self.model.providers), "quantized": bool(self.model.quantized)}

    @staticmethod
    def _ort_version() -> str:
        import onnxruntime

        return onnxruntime.__version__


__all__ = ["OnnxSegmenter"]
