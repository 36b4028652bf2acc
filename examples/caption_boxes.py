r"""Caption boxes of an image with the dense captioner (base model or a trained adapter).

    python examples/caption_boxes.py --model outputs/captioner --image photo.jpg \
        --box 10,20,200,150 --box 0,0,640,480 --granularity object
    python examples/caption_boxes.py --model outputs/captioner --boxes_file boxes.jsonl --output captions.jsonl

``--boxes_file`` is JSONL with one ``{"image": path, "bbox": [x, y, w, h], "granularity": ..., "image_id": ...}``
per line (keep the boxes of one image on adjacent lines: they share one image encoding); unusable
lines are skipped and logged to ``--rejects_file`` (rewritten by each run, so it always lists the rejects of the
whole input once). Captions are appended to ``--output`` as they are
made; running the same command again after an interruption continues where it stopped.
"""
import argparse
import json
import logging
import sys

from captioner.defaults import DEFAULT_BASE_MODEL, DEFAULT_MAX_IMAGE_TOKENS  # light: no torch before parsing
from run_support.cli import HelpFormatter, refuse_missing_paths


def _is_url(text) -> bool:
    return bool(text) and text.startswith(("http://", "https://", "data:"))


def parse_box(text: str) -> list:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--box {text!r} must be four numbers x,y,w,h") from error
    if len(values) != 4:
        raise argparse.ArgumentTypeError(f"--box {text!r} must be four numbers x,y,w,h")
    return values


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default=DEFAULT_BASE_MODEL, help="Adapter folder/Hub id (merged on load) or base model.")
    parser.add_argument("--base_model", default=None, help="Base model of the adapter (None: the one its config names).")
    parser.add_argument("--image", help="Image to caption the --box boxes of.")
    parser.add_argument("--box", action="append", type=parse_box, default=[], help="x,y,w,h in pixels; repeat for many boxes.")
    parser.add_argument("--granularity", default="object", choices=["image", "object", "part"], help="Prompt granularity for --box boxes.")
    parser.add_argument("--boxes_file", help="JSONL of {image, bbox, granularity, image_id} rows to caption.")
    parser.add_argument("--output", help="Append JSONL captions here, resuming after the last one written (required with --boxes_file; None with --image: print).")
    parser.add_argument("--rejects_file", default=None, help="JSONL of skipped rows with their reason (None: counted in the summary only).")
    parser.add_argument("--max_new_tokens", type=int, default=32, help="Longest caption in tokens.")
    parser.add_argument("--token_budget", type=int, default=16384, help="Padded tokens per generation batch.")
    parser.add_argument("--max_batch_size", type=int, default=64, help="Boxes per generation batch.")
    parser.add_argument("--max_image_tokens", type=int, default=DEFAULT_MAX_IMAGE_TOKENS, help="Cap on the tokens of one image (larger images are resized down).")
    parser.add_argument("--torch_dtype", default=None, help="float32, bfloat16, float16 or auto (None: transformers' default).")
    parser.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (default: where the model loads).")
    args = parser.parse_args(argv)
    if bool(args.image) == bool(args.boxes_file) or (args.image and not args.box):
        parser.error("give either --image with one or more --box, or --boxes_file")
    if args.boxes_file and not args.output:
        parser.error("--boxes_file needs --output (captions are written there as they are made)")
    # A mistyped path is named as one now, before torch is imported or the model loads.
    refuse_missing_paths(parser, local_or_hub=[("--model", args.model, "model"), ("--base_model", args.base_model, "model")],
                         local=[("--image", None if _is_url(args.image) else args.image, "image"),
                                ("--boxes_file", args.boxes_file, "file")])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # torch and transformers: after the command line is read.
    from captioner import DenseCaptioner
    from captioner.caption_files import caption_jsonl
    from run_support.rejects import RejectLog

    captioner = DenseCaptioner.from_pretrained(args.model, base_model=args.base_model, torch_dtype=args.torch_dtype, device=args.device,
                                               max_new_tokens=args.max_new_tokens, token_budget=args.token_budget, max_batch_size=args.max_batch_size,
                                               max_image_tokens=args.max_image_tokens)
    if args.boxes_file:
        # Started anew each run: a resumed run reads every line not yet captioned again, the bad ones included,
        # so the log it writes is the whole input's; appending would list the same rejects once per run.
        rejects = RejectLog(args.rejects_file, stage="caption_boxes")
        written = caption_jsonl(captioner, args.boxes_file, args.output, rejects)
        print(f"wrote {written} captions to {args.output}; {rejects.summary()}", file=sys.stderr)
        return 0
    captions = captioner.caption_boxes(args.image, args.box, args.granularity)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    for box, caption in zip(args.box, captions):
        out.write(json.dumps({"image": args.image, "bbox": box, "granularity": args.granularity,
                              "caption": caption.text, "truncated": caption.truncated}) + "\n")
    if args.output:
        out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
