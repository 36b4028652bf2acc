"""Fixtures of the export tests: one ONNX export per test session (see onnx_export_helpers)."""

from pathlib import Path

import pytest
from onnx_export_helpers import TINY_OVERRIDES, export_script

from tiny_models.unires import tiny_model_and_processor


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """`(model, processor, folder)`: the PyTorch model, its processor and its export (fp32 + int8)."""
    root = tmp_path_factory.mktemp("onnx-export")
    model, processor = tiny_model_and_processor(seed=0, **TINY_OVERRIDES)
    model.save_pretrained(root / "checkpoint")
    processor.save_pretrained(root / "checkpoint")
    folder = export_script().main(
        ["--model", str(root / "checkpoint"), "--output_dir", str(root / "onnx"), "--quantize", "int8"]
    )
    return model, processor, Path(folder)


@pytest.fixture(scope="session")
def ort_models(exported):
    from unires.export import ORTModelForReferringSegmentation

    folder = exported[2]
    return {
        "fp32": ORTModelForReferringSegmentation.from_pretrained(folder),
        "int8": ORTModelForReferringSegmentation.from_pretrained(folder, quantized=True),
    }
