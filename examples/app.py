#!/usr/bin/env python
"""The UniRES app in a browser (`make app`): upload an image, type expressions, get masks.

    python examples/app.py --model outputs/demo/model            # after `make demo`; offline
    python examples/app.py --model org/unires --port 7860        # a Hub id

On a Hugging Face Space (front matter `app_file: examples/app.py`) the model comes from the UNIRES_MODEL variable
and the host and port from Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT. The app is `unires.app.UniRESApp`.
"""

from __future__ import annotations

import argparse
import os

from run_support.cli import HelpFormatter, refuse_missing_paths
from unires.quantize_option import add_quantize_argument

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the page's server
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DEFAULT_MODEL = "outputs/demo/model"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", default=os.environ.get("UNIRES_MODEL", DEFAULT_MODEL),
                        help=f"UniRES checkpoint: a folder or a Hub id ($UNIRES_MODEL, else {DEFAULT_MODEL}).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="Address to listen on ($GRADIO_SERVER_NAME; 127.0.0.1 is this machine only).")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="Port to listen on ($GRADIO_SERVER_PORT).")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (None: cuda when available).")
    add_quantize_argument(parser)
    return parser


def parse_args(argv=None, check_paths: bool = False):
    parser = build_parser()
    args = parser.parse_args(argv)
    if check_paths:  # a mistyped folder is named as one, before torch loads
        refuse_missing_paths(parser, local_or_hub=[
            ("--model", args.model, "model", "Run `make demo` first, or pass --model <folder or Hub id>.")])
    return args


def main(argv=None):
    args = parse_args(argv, check_paths=True)
    from unires.app import Segmenter, UniRESApp  # torch and transformers: after the command line is read

    from modeling_unires.quantization_unires import quantization_config

    segmenter = Segmenter.from_pretrained(args.model, device=args.device,
                                          quantization_config=quantization_config(args.quantize))
    UniRESApp(segmenter, model_name=args.model).launch(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
