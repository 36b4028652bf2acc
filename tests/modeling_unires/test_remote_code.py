"""A saved UniRES checkpoint loads with trust_remote_code=True in a Python that cannot import modeling_unires."""

import json
import os
import subprocess
import sys

import torch

from tiny_models.unires import tiny_model_and_processor

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import importlib.abc, os, sys
repo_root = sys.argv[1]
sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != repo_root]

class BlockPackage(importlib.abc.MetaPathFinder):
    # The package may also be installed in editable mode: refuse it outright.
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_unires" or name.startswith("modeling_unires."):
            raise ImportError("modeling_unires is blocked in this test")

sys.meta_path.insert(0, BlockPackage())
try:
    import modeling_unires  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("modeling_unires is importable: the test would prove nothing")

import torch
from transformers import AutoModel, AutoProcessor
from PIL import Image

folder = sys.argv[2]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
assert "modeling_unires" not in sys.modules
inputs = torch.load(os.path.join(folder, "inputs.pt"), weights_only=True)
with torch.no_grad():
    logits = model(**inputs).logits
torch.save({"logits": logits, "module": type(model).__module__}, os.path.join(folder, "child.pt"))
tokens = processor(images=Image.new("RGB", (20, 10), (9, 99, 199)), text=["the red car"])
torch.save(dict(tokens), os.path.join(folder, "child_processor.pt"))
"""


def test_checkpoint_loads_as_remote_code(tmp_path):
    model, processor = tiny_model_and_processor(seed=4)
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_unires.UniRESModel"
    for code_file in ("configuration_unires.py", "modeling_unires.py", "convert_clip_unires.py", "processing_unires.py",
                      "image_processing_unires.py"):
        assert (folder / code_file).exists(), code_file

    from PIL import Image

    inputs = dict(processor(images=Image.new("RGB", (20, 30)), text=["the red car", "the window"]))
    inputs.pop("original_sizes")
    inputs["pixel_values"] = torch.randn(1, 3, 32, 32)
    torch.save(inputs, folder / "inputs.pt")
    with torch.no_grad():
        expected = model(**inputs).logits
    expected_tokens = processor(images=Image.new("RGB", (20, 10), (9, 99, 199)), text=["the red car"])

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", CHILD, REPO_ROOT, str(folder)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    child = torch.load(folder / "child.pt", weights_only=True)
    assert child["module"].startswith("transformers_modules"), child["module"]
    assert torch.equal(child["logits"], expected)
    child_tokens = torch.load(folder / "child_processor.pt", weights_only=True)
    for key, value in expected_tokens.items():
        assert torch.equal(child_tokens[key], value), key


PIPELINE_CHILD = r"""
import importlib.abc, json, os, sys
repo_root = sys.argv[1]
sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != repo_root]
blocked = {"modeling_unires", "unires", "pycocotools"}

class BlockPackages(importlib.abc.MetaPathFinder):
    # Our package may be installed in editable mode; pycocotools is blocked first to show it is optional.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, BlockPackages())
for name in ("modeling_unires", "pycocotools"):
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise SystemExit(f"{name} is importable: the test would prove nothing")

import numpy as np
import torch
from PIL import Image
from transformers import AutoProcessor, pipeline

image = Image.open(sys.argv[2])
texts = ["the red car", "the window", "the wheel of the car"]
report = {}
for folder in sys.argv[3:]:
    AutoProcessor.from_pretrained(folder, trust_remote_code=True)  # without pycocotools
    segmenter = pipeline("referring-expression-segmentation", model=folder, trust_remote_code=True)
    without_rle = segmenter(image, texts, mask_format="numpy")  # RLE only when asked for
    try:
        segmenter(image, texts, return_rle=True)
    except ImportError as error:
        rle_error = str(error)
    else:
        raise SystemExit("RLE output without pycocotools did not raise")
    blocked.discard("pycocotools")
    results = segmenter(image, texts, mask_format="numpy", return_rle=True)
    blocked.add("pycocotools")
    for name in [name for name in sys.modules if name.split(".")[0] == "pycocotools"]:
        del sys.modules[name]  # blocked again for the next folder
    report[folder] = {
        "pipeline_module": type(segmenter).__module__,
        "model_module": type(segmenter.model).__module__,
        "masks": [result["mask"].tolist() for result in results],
        "masks_without_rle": [result["mask"].tolist() for result in without_rle],
        "keys_without_rle": sorted(without_rle[0]),
        "scores": [result["score"] for result in results],
        "rles": [result["rle"] for result in results],
        "rle_error": rle_error,
        "fast_inference": "fast_inference_options" in segmenter.model.__dict__,
        "image_processor": type(segmenter.processor.image_processor).__name__,
    }
assert not any(name.split(".")[0] in ("modeling_unires", "unires") for name in sys.modules)
with open(os.path.join(os.path.dirname(sys.argv[2]), "report.json"), "w") as handle:
    json.dump(report, handle)
"""


def test_pipeline_travels_as_remote_code(tmp_path):
    """Case 5 of issue 20: a checkpoint saved by `model.save_pretrained` (the trainer's way) or by the pipeline's
    `save_pretrained` carries `custom_pipelines` and the pipeline's code; where neither our package nor pycocotools
    can be imported, `pipeline(task, model=folder, trust_remote_code=True)` loads it and gives the package's masks,
    and only RLE output asks for pycocotools (with a clear error)."""
    import numpy as np
    from PIL import Image
    from transformers import pipeline

    from modeling_unires import PIPELINE_TASK

    model, processor = tiny_model_and_processor(seed=7)
    by_model = tmp_path / "by-model"
    model.save_pretrained(by_model)
    processor.save_pretrained(by_model)
    segmenter = pipeline(PIPELINE_TASK, model=model, processor=processor)
    by_pipeline = tmp_path / "by-pipeline"
    segmenter.save_pretrained(by_pipeline)
    # The pipeline runs the fast image processor on a CPU but saves the plain one it was given.
    saved_processor = json.loads((by_pipeline / "processor_config.json").read_text())["image_processor"]
    assert saved_processor["image_processor_type"] == "UniRESImageProcessor"
    expected_entry = {
        PIPELINE_TASK: {"impl": "pipeline_unires.ReferringExpressionSegmentationPipeline", "pt": ["AutoModel"],
                        "type": "multimodal"}
    }
    for folder in (by_model, by_pipeline):
        config = json.loads((folder / "config.json").read_text())
        assert config["custom_pipelines"] == expected_entry, folder
        # The pipeline's own imports travel with it (transformers follows relative imports).
        for code_file in ("pipeline_unires.py", "fast_inference_unires.py", "image_processing_unires_fast.py",
                          "image_loading_unires.py", "rle_unires.py"):
            assert (folder / code_file).exists(), (folder, code_file)

    # With the package imported, the registered pipeline still serves the task with no trust_remote_code.
    assert type(pipeline(PIPELINE_TASK, model=str(by_model))) is type(segmenter)

    rng = np.random.default_rng(0)
    image_path = tmp_path / "image.png"
    Image.fromarray(rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)).save(image_path)
    texts = ["the red car", "the window", "the wheel of the car"]
    expected = segmenter(str(image_path), texts, mask_format="numpy", return_rle=True)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-I", "-c", PIPELINE_CHILD, REPO_ROOT, str(image_path), str(by_model), str(by_pipeline)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for folder in (by_model, by_pipeline):
        child = report[str(folder)]
        assert child["pipeline_module"].startswith("transformers_modules"), child["pipeline_module"]
        assert child["model_module"].startswith("transformers_modules"), child["model_module"]
        for row, want in enumerate(expected):
            assert np.array_equal(np.asarray(child["masks"][row], dtype=bool), want["mask"]), (folder, row)
            assert np.array_equal(np.asarray(child["masks_without_rle"][row], dtype=bool), want["mask"])
            assert child["rles"][row] == want["rle"]
            assert abs(child["scores"][row] - want["score"]) < 1e-6
        assert child["keys_without_rle"] == ["box", "mask", "score", "text"]
        # On a CPU the remote-code pipeline runs the fast path too.
        assert child["fast_inference"] and child["image_processor"] == "UniRESImageProcessorFast"
        assert "pip install pycocotools" in child["rle_error"] and "return_rle=False" in child["rle_error"]
