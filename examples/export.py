#!/usr/bin/env python
r"""Export a UniRES checkpoint to ONNX, split as SAM's exports are: an image encoder and a query decoder.

    python examples/export.py --model outputs/demo/model --output_dir outputs/unires-onnx --quantize int8

Writes image_encoder.onnx, query_decoder.onnx (and with --quantize int8 their *_quantized.onnx versions), the
processor's files (tokenizer.json included), config.json, onnx_config.json and a README.md with the Python that runs
them with onnxruntime, numpy, Pillow and tokenizers only. The export is checked against the PyTorch model (logits
within 1e-4 on ONNX Runtime) before it is kept. Needs `pip install "unires[onnx]"`.
"""

import argparse
from pathlib import Path

from run_support.cli import HelpFormatter, refuse_missing_paths


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", required=True, help="UniRES checkpoint: folder or Hub id.")
    parser.add_argument("--output_dir", required=True, help="Folder the export is written to.")
    parser.add_argument("--quantize", choices=("none", "int8"), default="none",
                        help="int8: also write ONNX Runtime dynamic-quantized graphs (per-channel int8 weights).")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset of the graphs.")
    parser.add_argument("--trust_remote_code", action="store_true",
                        help="Load a checkpoint whose code is not this package's (its own modeling files).")
    args = parser.parse_args(argv)
    refuse_missing_paths(parser, local_or_hub=[("--model", args.model, "model")])
    return args


def main(argv=None):
    args = parse_args(argv)
    # Heavy imports after the command line is read: `--help` and a mistyped path answer at once.
    from transformers import AutoModel, AutoProcessor

    import modeling_unires  # noqa: F401  (registers the Auto classes)
    from unires.export.onnx_export import export_onnx

    model = AutoModel.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
    folder = export_onnx(model, processor, args.output_dir, opset=args.opset, quantize=args.quantize,
                         model_id=args.model)
    files = sorted(path.name for path in Path(folder).iterdir())
    print(f"wrote {folder}: {', '.join(files)}")
    print(f"how to run it: {Path(folder) / 'README.md'}")
    return folder


if __name__ == "__main__":
    main()
