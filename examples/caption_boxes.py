"""Caption boxes of an image with the dense captioner (base model or a trained adapter).

    python examples/caption_boxes.py --model outputs/captioner --image photo.jpg \
        --box 10,20,200,150 --box 0,0,640,480 --granularity object
    python examples/caption_boxes.py --model outputs/captioner --boxes_file boxes.jsonl --output captions.jsonl

``--boxes_file`` is JSONL with one ``{"image": path, "bbox": [x, y, w, h], "granularity": ..., "image_id": ...}``
per line; unusable lines are skipped and logged to ``--rejects_file``.
"""
import argparse
import json
import logging
import sys

from captioner import DEFAULT_BASE_MODEL, DenseCaptioner
from dataset_scripts.rejects import RejectLog


def parse_box(text: str) -> list:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--box {text!r} must be four numbers x,y,w,h") from error
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--box {text!r} must be four numbers x,y,w,h")
    return values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_BASE_MODEL, help="Adapter folder/Hub id (merged on load) or base model.")
    parser.add_argument("--base_model", default=None, help="Base model of the adapter, if not the one its config names.")
    parser.add_argument("--image", help="Image to caption the --box boxes of.")
    parser.add_argument("--box", action="append", type=parse_box, default=[], help="x,y,w,h in pixels; repeat for many boxes.")
    parser.add_argument("--granularity", default="object", choices=["image", "object", "part"], help="Prompt granularity for --box boxes.")
    parser.add_argument("--boxes_file", help="JSONL of {image, bbox, granularity, image_id} rows to caption.")
    parser.add_argument("--output", help="Write JSONL captions here (default: print).")
    parser.add_argument("--rejects_file", default=None, help="JSONL of skipped rows with their reason.")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="Longest caption in tokens.")
    parser.add_argument("--token_budget", type=int, default=16384, help="Padded tokens per generation batch.")
    parser.add_argument("--max_batch_size", type=int, default=64, help="Boxes per generation batch.")
    parser.add_argument("--torch_dtype", default=None, help="float32, bfloat16, float16 or auto.")
    parser.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: where the model loads).")
    args = parser.parse_args(argv)
    if bool(args.image) == bool(args.boxes_file) or (args.image and not args.box):
        parser.error("give either --image with one or more --box, or --boxes_file")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    captioner = DenseCaptioner.from_pretrained(args.model, base_model=args.base_model, torch_dtype=args.torch_dtype, device=args.device,
                                               max_new_tokens=args.max_new_tokens, token_budget=args.token_budget, max_batch_size=args.max_batch_size)
    if args.image:
        captions = captioner.caption(args.image, args.box, args.granularity)
        results = [{"image": args.image, "bbox": box, "granularity": args.granularity, "caption": caption} for box, caption in zip(args.box, captions)]
    else:
        with open(args.boxes_file, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        rejects = RejectLog(args.rejects_file, stage="caption_boxes")
        results = list(captioner.caption_dataset(rows, rejects))
        print(rejects.summary(), file=sys.stderr)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    for result in results:
        out.write(json.dumps(result) + "\n")
    if args.output:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
