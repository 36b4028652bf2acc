"""A saved UniRES checkpoint loads with trust_remote_code=True in a Python that cannot import modeling_unires."""

import json
import os
import subprocess
import sys

import torch

from modeling_unires.testing_utils import tiny_model_and_processor

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
    for code_file in ("configuration_unires.py", "modeling_unires.py", "processing_unires.py",
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
