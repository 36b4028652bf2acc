#!/usr/bin/env python
"""UniRES forward / its own CLIP towers' forward (the same vision and text towers run alone), paper-size model.

Paper-size UniRES (ViT-B/16 towers, 64 + 8 group tokens, 3 + 3 decoder layers), random weights, one expression per
image, at 480x480 (target <= 1.15) and 352x352 (target <= 1.25). The towers' side is `model.vision_model(pixel_values)`
plus `model.text_model(input_ids)`: what any CLIP-based segmenter pays before it adds anything. The difference is the
group tokens inside the ViT, the region filter, the decoder and the mask head.

    python benchmarks/forward_overhead.py                 # CPU: 1 image; CUDA: 32 images, bf16
    python benchmarks/forward_overhead.py --profile       # + where the forward's time goes (stderr)
"""

import sys

import torch

from modeling_unires import UniRESModel

from common import base_parser, for_inference, device_info, emit, median, paired_ratio, paired_timings, paper_config, \
    parse_args, profile_summary, rounded

TARGETS = {480: "<= 1.15", 352: "<= 1.25"}


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[480, 352])
    parser.add_argument("--batch", type=int, default=None, help="images (= expressions); default 32 on CUDA, 1 on CPU")
    parser.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    args = parse_args(parser)
    cuda = args.device.startswith("cuda")
    batch = args.batch or (32 if cuda else 1)
    repeats = args.repeats or (1 if args.quick else (10 if cuda else 3))
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    sizes = [64] if args.quick else args.sizes
    info = device_info(args.device)

    for size in sizes:
        torch.manual_seed(0)
        config = paper_config(size)
        model = for_inference(UniRESModel(config).to(dtype=dtype), args.device)
        length = config.text_max_length
        pixel_values = torch.randn(batch, 3, size, size, device=args.device, dtype=dtype)
        input_ids = torch.randint(0, config.text_config.vocab_size, (batch, length), device=args.device)
        attention_mask = torch.ones_like(input_ids)

        def unires():
            model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)

        def towers():
            model.vision_model(pixel_values=pixel_values)
            model.text_model(input_ids=input_ids, attention_mask=attention_mask)

        embeddings = None

        def unires_image_encoding():
            nonlocal embeddings
            embeddings = model.get_image_embeddings(pixel_values)

        parts = {
            "vision_tower": lambda: model.vision_model(pixel_values=pixel_values),
            "unires_image_encoding": unires_image_encoding,
            "text_tower": lambda: model.text_model(input_ids=input_ids, attention_mask=attention_mask),
            "unires_decode_from_embeddings": lambda: model(image_embeddings=embeddings, input_ids=input_ids,
                                                           attention_mask=attention_mask),
        }
        extra = {}
        with torch.inference_mode():
            timings = paired_timings({"unires": unires, "towers": towers}, repeats, args.device)
            if args.profile:
                # Where the difference goes, part by part (same clock), then torch.profiler's op tables.
                part_timings = paired_timings(parts, repeats, args.device)
                extra["parts_median_s"] = {name: round(median(v), 5) for name, v in part_timings.items()}
                print(f"\n=== parts at {size}px (median s): {extra['parts_median_s']}", file=sys.stderr)
                profile_summary(unires, args.device, f"UniRES forward at {size}px, batch {batch}")
                profile_summary(towers, args.device, f"CLIP towers at {size}px, batch {batch}")
        ratio = paired_ratio(timings["unires"], timings["towers"])
        emit(
            f"forward_over_towers_{size}", ratio, TARGETS.get(size),
            description=f"UniRES forward / its CLIP towers' forward at {size}x{size}",
            timings_s=rounded(timings), median_s={k: round(median(v), 5) for k, v in timings.items()},
            setup=dict(image_size=size, images=batch, expressions=batch, dtype=str(dtype), repeats=repeats,
                       model="paper size: ViT-B/16 + CLIP text tower, 64+8 group tokens, 3+3 decoder layers, "
                             "random weights", scaled_down=None if cuda else f"CPU: batch {batch} instead of 32, fp32"),
            device=info, **extra,
        )
        del model


if __name__ == "__main__":
    main()
