#!/usr/bin/env python
"""Speed of answering K expressions about one image: shared image encoding vs one forward each.

UniRES's image side does not depend on the text, so the model encodes an image once and
decodes every expression against that encoding (`image_indices` / `get_image_embeddings`).
This prints, measured in one run on one device, the time per image for K expressions both
ways and their ratio. Random weights: speed does not depend on training.

    python benchmarks/encode_once.py --expressions 1 4 16 --device cpu
"""

import argparse
import time

import torch

from modeling_unires import UniRESConfig, UniRESModel
from unires.demo import DEMO_CONFIG

from common import for_inference, paper_config

# The demo's model (what `make demo` trains) and the paper's (ViT-B/16 towers at 480x480, 64 + 8 group tokens).
PRESETS = {"demo": lambda: UniRESConfig(**DEMO_CONFIG), "base": lambda: paper_config(480)}


def timed(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--expressions", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--attn_implementation", default="sdpa", choices=["sdpa", "eager"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = PRESETS[args.preset]()
    config._attn_implementation = args.attn_implementation
    dtype = getattr(torch, args.dtype)
    model = for_inference(UniRESModel(config).to(dtype=dtype), args.device)
    size, length = config.image_size, config.text_max_length
    vocab = config.text_config.vocab_size
    pixel_values = torch.randn(1, 3, size, size, device=args.device, dtype=dtype)
    print(f"preset {args.preset}, device {args.device}, dtype {args.dtype}, attention {args.attn_implementation}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, input {size}x{size}")
    print(f"{'K':>4} {'separate ms':>12} {'shared ms':>10} {'ratio':>7}")
    with torch.inference_mode():
        for k in args.expressions:
            input_ids = torch.randint(0, vocab, (k, length), device=args.device)
            mask = torch.ones_like(input_ids)

            def separate():
                for i in range(k):
                    model(pixel_values=pixel_values, input_ids=input_ids[i : i + 1], attention_mask=mask[i : i + 1])

            def shared():
                model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=mask,
                      image_indices=torch.zeros(k, dtype=torch.long, device=args.device))

            t_separate, t_shared = timed(separate, args.repeats, args.device), timed(shared, args.repeats, args.device)
            print(f"{k:>4} {t_separate * 1e3:>12.1f} {t_shared * 1e3:>10.1f} {t_separate / t_shared:>6.2f}x")


if __name__ == "__main__":
    main()
