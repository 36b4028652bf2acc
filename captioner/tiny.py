r"""The captioner offline, in a minute on a CPU: a tiny base model and a tiny COCO Captions folder.

    python -m captioner.tiny --output_dir data/tiny-captioner
    python examples/train_captioner.py --base_model data/tiny-captioner/base \
        --coco_dir data/tiny-captioner/coco --output_dir outputs/tiny-captioner \
        --max_steps 30 --gradient_accumulation_steps 1 --learning_rate 2e-3

writes ``OUTPUT_DIR/base/`` (a randomly initialised two-layer Qwen3-VL, the default base model's architecture, with a
tokenizer trained on a few sentences: a folder ``--base_model`` loads like a Hub checkpoint) and ``OUTPUT_DIR/coco/``
in the COCO Captions 2017 layout that ``--coco_dir`` reads: ``annotations/captions_train2017.json`` (``images`` with
``id``, ``file_name``, ``width``, ``height``; ``annotations`` with ``id``, ``image_id``, ``caption``) and the JPEGs in
``train2017/``. Each picture is a coloured box on a plain background, described by two captions. Nothing is
downloaded. The captions it learns are not meant to be good: it checks the recipe end to end, as the tests do.
"""

from __future__ import annotations

import argparse
import json
import os

from run_support.cli import HelpFormatter, positive_int

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (235, 215, 40),
           "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ("square", "wide box", "tall box")


def _picture(index: int):
    """Image ``index``: a box of one colour and shape on a background of another, and its two captions."""
    names = list(COLOURS)
    fill, background = names[index % len(names)], names[(index // len(names) + index + 1) % len(names)]
    if fill == background:
        background = names[(names.index(fill) + 1) % len(names)]
    shape = SHAPES[index % len(SHAPES)]
    width, height = 64 + 8 * (index % 3), 48 + 8 * (index % 2)
    box_w, box_h = {"square": (24, 24), "wide box": (40, 16), "tall box": (16, 32)}[shape]
    left, top = (index * 7) % (width - box_w), (index * 5) % (height - box_h)
    captions = [f"a {fill} {shape} on a {background} background", f"{background} picture with a {fill} {shape}"]
    return (width, height), (left, top, left + box_w, top + box_h), COLOURS[fill], COLOURS[background], captions


def write_tiny_coco_captions(folder: str | os.PathLike, num_images: int = 16) -> str:
    """Write ``num_images`` pictures and their captions in the COCO Captions 2017 layout under ``folder``."""
    from PIL import Image, ImageDraw

    images_dir = os.path.join(folder, "train2017")
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(os.path.join(folder, "annotations"), exist_ok=True)
    images, annotations = [], []
    for index in range(num_images):
        (width, height), box, fill, background, captions = _picture(index)
        file_name = f"{index:012d}.jpg"  # COCO's own naming
        picture = Image.new("RGB", (width, height), background)
        ImageDraw.Draw(picture).rectangle(box, fill=fill)
        picture.save(os.path.join(images_dir, file_name), quality=95)
        images.append({"id": index, "file_name": file_name, "width": width, "height": height})
        annotations += [{"id": len(annotations) + n, "image_id": index, "caption": caption} for n, caption in enumerate(captions)]
    with open(os.path.join(folder, "annotations", "captions_train2017.json"), "w", encoding="utf-8") as handle:
        json.dump({"images": images, "annotations": annotations}, handle, indent=1)
    return os.fspath(folder)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioner.tiny", description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--output_dir", required=True, help="folder to write base/ and coco/ into")
    parser.add_argument("--num_images", type=positive_int, default=16, help="pictures in coco/train2017/ (two captions each)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the base model's random weights")
    args = parser.parse_args(argv)
    base_dir, coco_dir = os.path.join(args.output_dir, "base"), os.path.join(args.output_dir, "coco")
    for folder in (base_dir, coco_dir):  # never write over a folder the user filled (a real COCO, say)
        if os.path.isdir(folder) and os.listdir(folder):
            parser.exit(2, f"{parser.prog}: error: {folder} already exists and is not empty; choose another --output_dir\n")

    from .testing_utils import save_tiny_captioner  # torch and transformers: after the command line is read

    save_tiny_captioner(base_dir, seed=args.seed)
    write_tiny_coco_captions(coco_dir, args.num_images)
    print(f"wrote a tiny base model to {base_dir} and {args.num_images} captioned images to {coco_dir}; train with\n"
          f"  python examples/train_captioner.py --base_model {base_dir} --coco_dir {coco_dir} "
          "--output_dir outputs/tiny-captioner --max_steps 30 --gradient_accumulation_steps 1 --learning_rate 2e-3")


if __name__ == "__main__":
    main()
