"""Helpers of the export tests. conftest.py makes one ONNX export per test session: a tiny random UniRES shaped as
the demo model (pixel branch, decoder token stride 2), saved as a checkpoint and exported by
`examples/export.py --quantize int8`.

The threshold is 0.5: a random tiny model's probabilities sit at 0.5 +- 0.03, so that its masks hold about half of
each image, not all of it (at the default 0.35), and a disagreement would show.
"""

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from tiny_models.unires import TINY_SENTENCES

REPO = Path(__file__).resolve().parents[3]
THRESHOLD = 0.5
TINY_OVERRIDES = dict(pixel_decoder_channels=4, decoder_token_stride=2, mask_threshold=THRESHOLD)


def export_script():
    spec = importlib.util.spec_from_file_location("examples_export", REPO / "examples" / "export.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_images(count: int, seed: int = 0) -> list:
    """Smooth random RGB images of different sizes (larger and smaller than the model's input)."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        height, width = 24 + 9 * index, 40 + 5 * (index % 3)
        coarse = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        images.append(Image.fromarray(coarse).resize((width, height), Image.BILINEAR))
    return images


def expressions(count: int, offset: int = 0) -> list:
    """`count` different expressions made of the tokenizer's sentences."""
    words = [sentence.split() for sentence in TINY_SENTENCES]
    out = []
    for index in range(offset, offset + count):
        sentence = TINY_SENTENCES[index % len(TINY_SENTENCES)]
        extra = words[(index // len(TINY_SENTENCES)) % len(words)]
        out.append(sentence if index < len(TINY_SENTENCES) else f"{sentence} {' '.join(extra[-2:])}")
    return out
