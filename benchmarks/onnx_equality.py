#!/usr/bin/env python
"""ONNX Runtime against PyTorch on a trained checkpoint (issue 31's equality, beyond the tests' tiny random model).

Exports `--model` (default: `make demo`'s) with `unires.export.export_onnx`, then feeds the same processor inputs to
the model and to `ORTModelForReferringSegmentation` for 1, 7 and 33 expressions spread over 4 validation images, and
prints per count the largest |logit difference| (target <= 1e-4) and whether the masks agree at the config's
threshold. No timing: a correctness check for a real model, which the tests cannot train.

    python benchmarks/onnx_equality.py [--model outputs/demo/model --data outputs/demo/data]
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from common import repo_path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="outputs/demo/model", help="a UniRES checkpoint folder (default: make demo's)")
    parser.add_argument("--data", default="outputs/demo/data", help="an MRES dataset folder with a validation split")
    args = parser.parse_args()

    from dataset_scripts.load import load_mres_dataset
    from modeling_unires import UniRESModel, UniRESProcessor
    from unires.export import ORTModelForReferringSegmentation, export_onnx

    model = UniRESModel.from_pretrained(repo_path(args.model)).eval()
    processor = UniRESProcessor.from_pretrained(repo_path(args.model))
    rows = load_mres_dataset([repo_path(args.data)], "validation")
    images = [rows[i]["image"] for i in range(4)]
    sentences = [s for i in range(min(12, len(rows))) for r in rows[i]["referents"] for s in r["sentences"]]
    threshold = model.config.mask_threshold
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        runtime = ORTModelForReferringSegmentation.from_pretrained(str(export_onnx(model, processor, folder)))
        for count in (1, 7, 33):
            texts = [[] for _ in images]
            for k in range(count):
                texts[k % len(images)].append(sentences[k % len(sentences)])
            used = [(image, group) for image, group in zip(images, texts) if group]
            inputs = processor(images=[image for image, _ in used], text=[group for _, group in used])
            inputs.pop("original_sizes")
            with torch.no_grad():
                expected = model(**inputs).logits
            got = runtime(**inputs).logits
            report[count] = {
                "images": len(used),
                "max_abs_logit_difference": float((expected - got).abs().max()),
                "masks_equal_at_threshold": bool(torch.equal(expected.sigmoid() > threshold, got.sigmoid() > threshold)),
            }
    print(json.dumps({"model": args.model, "expressions": report}))


if __name__ == "__main__":
    main()
