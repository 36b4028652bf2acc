"""The export runs where torch is not installed (issue 31): a Python process whose `import torch` fails loads the export
and segments an image with onnxruntime, numpy, Pillow and tokenizers only, running the README's own snippet, and its
masks match the PyTorch pipeline's (IoU >= 0.999). The README and `onnx_config.json` say what that needs."""

import json
import subprocess
import sys

import numpy as np
from onnx_export_helpers import sample_images

from unires.export.onnx_export import extract_snippet, snippet

TEXTS = ["the red car on the left", "left wheel of the blue bus", "the window of the small house"]

# Runs the snippet with torch and transformers made unimportable (a meta-path finder that refuses them, installed
# before anything else), then saves the masks.
CHILD = r"""
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked in this process")
        return None

sys.meta_path.insert(0, NoTorch())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("torch imported")
code, out = open(sys.argv[1]).read(), sys.argv[2]
scope = {}
exec(compile(code, "README snippet", "exec"), scope)
import numpy as np
np.save(out, scope["masks"])
assert not any(name.split(".")[0] in ("torch", "transformers") for name in sys.modules), "torch was loaded"
"""


def test_the_readme_snippet_segments_without_torch_like_the_pipeline(exported, tmp_path):
    from transformers import pipeline

    import modeling_unires

    model, processor, folder = exported
    readme = (folder / "README.md").read_text()
    code = extract_snippet(readme)
    assert code == snippet()  # the README carries the snippet as written
    assert "import torch" not in code and "transformers" not in code
    image = sample_images(4, seed=11)[3]
    photo = tmp_path / "photo.jpg"
    image.save(photo, quality=95)
    script = tmp_path / "snippet.py"
    # The snippet as the README has it; only the folder, the image and the expressions are the test's.
    script.write_text(code.replace('"unires-onnx"', repr(str(folder)))
                          .replace('"photo.jpg"', repr(str(photo)))
                          .replace('["the dog", "its left ear"]', repr(TEXTS)))
    out = tmp_path / "masks.npy"
    result = subprocess.run([sys.executable, "-c", CHILD, str(script), str(out)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    masks = np.load(out)

    from PIL import Image

    segmenter = pipeline(modeling_unires.PIPELINE_TASK, model=model, processor=processor)
    expected = segmenter(Image.open(photo), TEXTS, mask_format="numpy")
    assert masks.shape == (len(TEXTS), image.height, image.width) and masks.dtype == bool
    for mask, result in zip(masks, expected):
        union = (mask | result["mask"]).sum()
        iou = (mask & result["mask"]).sum() / union if union else 1.0
        assert iou >= 0.999, (result["text"], iou)
    assert 0.05 < masks.mean() < 0.95  # masks that could disagree


def test_onnx_config_holds_what_a_runtime_without_transformers_needs(exported):
    _, processor, folder = exported
    config = json.loads((folder / "onnx_config.json").read_text())
    image_processor = processor.image_processor
    assert config["image_size"] == image_processor.size["height"] == 32
    assert config["image_mean"] == image_processor.image_mean and config["image_std"] == image_processor.image_std
    assert config["mask_threshold"] == image_processor.mask_threshold
    assert config["text_max_length"] == processor.text_max_length
    assert config["pad_token_id"] == processor.tokenizer.pad_token_id
    assert config["image_encoder"]["outputs"] == ["image_embeddings", "pixel_features"]
    for name in ("image_encoder.onnx", "query_decoder.onnx", "image_encoder_quantized.onnx",
                 "query_decoder_quantized.onnx", "tokenizer.json", "processor_config.json", "config.json",
                 "README.md"):
        assert (folder / name).is_file(), name

    from tokenizers import Tokenizer

    # The snippet's tokenisation (tokenizers alone) is the processor's.
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(config["text_max_length"])
    tokenizer.enable_padding(length=config["text_max_length"], pad_id=config["pad_token_id"])
    long = " ".join(TEXTS)  # truncated
    encoded = tokenizer.encode_batch([*TEXTS, long])
    expected = processor(text=[*TEXTS, long])
    assert np.array_equal([e.ids for e in encoded], expected["input_ids"].numpy())
    assert np.array_equal([e.attention_mask for e in encoded], expected["attention_mask"].numpy())
