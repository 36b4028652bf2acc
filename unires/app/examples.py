"""A few MRES-Synth scenes written as PNGs with expressions of both granularities: the page's clickable examples.

They are generated (deterministically, in well under a second) rather than shipped, from the validation split that
the demo model never trains on.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from dataset_scripts.features import sentences_of
from dataset_scripts.mres_synth import MRESSynthConfig, generate_row

EXAMPLE_SPLIT = "validation"


def write_example_images(folder, num_examples: int = 4, image_size: int = 192, seed: int = 0) -> list[tuple[str, str]]:
    """
    Write `num_examples` scenes to `folder` as PNGs; return `(png_path, expressions)` pairs, the expressions (one per
    line) being the first sentence of the scene's first object and of that object's first part.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = MRESSynthConfig(image_size=image_size, seed=seed)
    examples = []
    for index in range(num_examples):
        row = generate_row(EXAMPLE_SPLIT, index, config)
        path = folder / f"mres-synth-{EXAMPLE_SPLIT}-{index}.png"
        Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB").save(path)
        picked, parent = [], None
        for referent in row["referents"]:
            # The first object that has a sentence, then the first of its parts that has one.
            wanted = "object" if not picked else "part"
            sentences = sentences_of(referent)
            if referent["granularity"] == wanted and sentences and referent["parent_id"] == parent:
                picked.append(sentences[0])
                parent = referent["referent_id"]
                if len(picked) == 2:
                    break
        examples.append((str(path), "\n".join(picked)))
    return examples
