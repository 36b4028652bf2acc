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


# The tiny base model: everything is made locally, a byte-level BPE tokenizer trained on a few sentences with the Qwen
# special tokens, a Qwen-style chat template, the Qwen2-VL image processor at tiny sizes, and a randomly initialised
# Qwen3VLForConditionalGeneration of ~150k parameters. torch and transformers are imported by the functions that need
# them, so that `--help` and a refused command line stay instant.

# Qwen2's split pattern (contractions, words, single digits, punctuation, runs of newlines, spaces).
QWEN_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")

# Same shape of conversation as Qwen's template: <|im_start|>role\n ... <|im_end|>\n
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = (
    "Describe the whole image in one sentence. Describe the object in the region with a short referring "
    "expression. Name the object part in the region as '<part> of <object>'. (0,0),(999,999) 0123456789 "
    "a dog on the grass, the man on the left, a red car parked by the house, the left ear of the brown dog, "
    "wheel of car, window of house, head of cat, leg of chair, user assistant system\n\n"
    "paragraphs\n\nare split by blank lines, as in Qwen's vocabulary where two newlines are one token\n\n"
)


def build_tiny_tokenizer(vocab_size: int = 320) :
    """A byte-level BPE with Qwen's special tokens, trained in milliseconds on a few sentences."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    # Qwen2Tokenizer's own pre-tokenizer, so that merges learned here (e.g. two newlines as one token) apply there
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[SPECIAL_TOKENS[0]], show_progress=False
    )
    bpe.train_from_iterator([_CORPUS] * 4, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return Qwen2Tokenizer(
        vocab=model["vocab"],
        merges=merges,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
    )


def build_tiny_processor(image_side: int = 32) :
    """Tokenizer + image/video processors; images are resized to about ``image_side``² pixels."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = build_tiny_tokenizer()
    size = {"shortest_edge": image_side * image_side, "longest_edge": 4 * image_side * image_side}
    vision = dict(size=size, patch_size=16, merge_size=2, temporal_patch_size=2)
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(**vision),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**vision),
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_model(processor, hidden_size: int = 32, seed: int = 0):
    """A randomly initialised two-layer Qwen3-VL matching ``processor``'s vocabulary."""
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    ids = processor.tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(processor.tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=512,
            initializer_range=0.3,  # a frozen random lm_head with the usual 0.02 caps how peaked logits can get
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True},
            pad_token_id=ids("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=hidden_size,
            num_position_embeddings=16,
            deepstack_visual_indexes=[0],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    return model.eval()


def save_tiny_captioner(path: str | os.PathLike, seed: int = 0) -> str:
    """Write a tiny base model + processor to ``path`` (loadable by name like a Hub checkpoint)."""
    processor = build_tiny_processor()
    model = build_tiny_model(processor, seed=seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return os.fspath(path)


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

    save_tiny_captioner(base_dir, seed=args.seed)
    write_tiny_coco_captions(coco_dir, args.num_images)
    print(f"wrote a tiny base model to {base_dir} and {args.num_images} captioned images to {coco_dir}; train with\n"
          f"  python examples/train_captioner.py --base_model {base_dir} --coco_dir {coco_dir} "
          "--output_dir outputs/tiny-captioner --max_steps 30 --gradient_accumulation_steps 1 --learning_rate 2e-3")


if __name__ == "__main__":
    main()
