#!/usr/bin/env python
"""Expressions/s of the evaluation adapters on one image with 8 expressions: UniRES, CLIPSeg and SAM 3, random weights.

Each adapter is timed end to end as the harness calls it (`Segmenter.masks`: preprocessing, model, resizing the
logits to the image's original size, 640x480 here, thresholding), alternately in one loop (UniRES, CLIPSeg, SAM 3,
repeat), so the ratios come from one run. UniRES and SAM 3 encode the image once for the 8 expressions; CLIPSeg runs
its vision tower once per expression (its forward pairs one image with one text).

Sizes: UniRES is the paper's model (ViT-B/16 towers, 64 + 8 group tokens, 3 + 3 decoder layers) at 480x480; CLIPSeg
is "rd64-refined" (ViT-B/16 at 352x352, CLIP's text tower). SAM 3 on CUDA is `Sam3Config()`'s default (the released
size: ViT 32x1024 at 1008x1008, text 24x1024, 200 queries); on CPU that is minutes per call on a shared 2-core
machine, so a ViT-B-sized SAM 3 is timed instead (ViT 12x768 at 560x560 with 14x14 patches, text 12x512, DETR and
mask decoders at their default size, 200 queries), stated in the output. --quick: tiny models, numbers meaningless.

    python benchmarks/segmenters.py [--quick] [--device cuda]
"""

import torch
from PIL import Image

from modeling_unires import UniRESImageProcessor, UniRESModel, UniRESProcessor
from common import base_parser, device_info, emit, median, paired_timings, paper_config, parse_args, rounded
from tiny_models.unires import TINY_SENTENCES, tiny_config, tiny_tokenizer
from unires.evaluation.segmenters import CLIPSegSegmenter, Sam3Segmenter, UniRESSegmenter
from tiny_models.baselines import clipseg_config, clipseg_processor, sam3_config, sam3_processor


EXPRESSIONS = ["the red car on the left", "left wheel of the blue bus", "the window of the small house",
               "the big green tree behind the house", "the right ear of the brown dog", "the yellow door of the car",
               "the dog", "the roof of the house"]


def _text_ids(tokenizer):
    return dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id)


def build(quick: bool, cuda: bool):
    tokenizer = tiny_tokenizer(TINY_SENTENCES + EXPRESSIONS, text_max_length=77)
    sizes = {}
    if quick:
        unires_config = tiny_config(tokenizer, image_size=32)
        clip_config = clipseg_config(tokenizer, image_size=32)
        sam_config = sam3_config(tokenizer, image_size=56)
        sizes = {"unires": "tiny", "clipseg": "tiny", "sam3": "tiny"}
    else:
        unires_config = paper_config(480).fit_to_tokenizer(tokenizer)
        from transformers import CLIPSegConfig, Sam3Config

        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      image_size=352, patch_size=16)
        clip_config = CLIPSegConfig(vision_config=vision, text_config=_text_ids(tokenizer), reduce_dim=64,
                                    use_complex_transposed_convolution=True)
        text = dict(hidden_size=1024, intermediate_size=4096, projection_dim=512, num_hidden_layers=24,
                    num_attention_heads=16, max_position_embeddings=32, hidden_act="gelu", **_text_ids(tokenizer))
        if cuda:
            sam_config = Sam3Config(text_config=text)
            sizes["sam3"] = "released size (Sam3Config defaults): ViT 32x1024 at 1008, text 24x1024, 200 queries"
        else:
            vit = dict(model_type="sam3_vit_model", hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, image_size=560, patch_size=14, window_size=10,
                       global_attn_indexes=[2, 5, 8, 11], pretrain_image_size=560)
            text.update(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
            sam_config = Sam3Config(vision_config=dict(backbone_config=vit, backbone_feature_sizes=[[160, 160],
                                                                                                  [80, 80], [40, 40]]),
                                    text_config=text)
            sizes["sam3"] = ("ViT-B-sized on CPU: ViT 12x768 at 560 (patch 14), text 12x512, DETR/mask decoders "
                             "default, 200 queries")
        sizes["unires"] = "paper size at 480 (ViT-B/16, 64+8 group tokens, 3+3 decoder layers)"
        sizes["clipseg"] = "rd64-refined, ViT-B/16 at 352, CLIP text tower"
    from transformers import CLIPSegForImageSegmentation, Sam3Model

    torch.manual_seed(0)
    unires = UniRESModel(unires_config).eval()
    unires_processor = UniRESProcessor(UniRESImageProcessor(size=unires_config.image_size), tokenizer,
                                       text_max_length=unires_config.text_max_length)
    clipseg = CLIPSegForImageSegmentation(clip_config).eval()
    sam3 = Sam3Model(sam_config).eval()
    sam_side = sam_config.vision_config.backbone_config.image_size
    return {
        "unires": (UniRESSegmenter(unires, unires_processor), unires),
        "clipseg": (CLIPSegSegmenter(clipseg, clipseg_processor(tokenizer, clip_config.vision_config.image_size),
                                     batch_size=len(EXPRESSIONS)), clipseg),
        "sam3": (Sam3Segmenter(sam3, sam3_processor(tokenizer, sam_side), batch_size=len(EXPRESSIONS)), sam3),
    }, sizes


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    args = parse_args(parser)
    device = args.device
    cuda = device.startswith("cuda")
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    repeats = args.repeats or (1 if args.quick else (10 if cuda else 3))
    adapters, sizes = build(args.quick, cuda)
    for segmenter, model in adapters.values():
        model.to(device, dtype)
    image = Image.new("RGB", (640, 480), (120, 80, 40))
    k = len(EXPRESSIONS)
    calls = {name: (lambda s=segmenter: s.masks([image], [EXPRESSIONS])) for name, (segmenter, _) in adapters.items()}
    with torch.inference_mode():
        timings = paired_timings(calls, repeats, device)
    info = device_info(device)
    medians = {name: round(median(values), 4) for name, values in timings.items()}
    per_s = {name: k / seconds for name, seconds in medians.items()}
    parameters = {name: sum(p.numel() for p in model.parameters()) for name, (_, model) in adapters.items()}
    setup = dict(expressions=k, image="640x480", dtype=str(dtype), repeats=repeats, sizes=sizes,
                 parameters=parameters, end_to_end="Segmenter.masks: preprocess, model, resize to 640x480, threshold")
    for name in ("clipseg", "sam3"):
        ratios = [(k / u) / (k / o) for u, o in zip(timings["unires"], timings[name])]
        emit(f"expressions_per_s_unires_over_{name}_adapter", median(ratios), None,
             description=f"expressions/s, 1 image x {k} expressions through the harness: UniRES / {name}",
             expressions_per_s=per_s, median_s=medians, timings_s=rounded(timings), setup=setup, device=info)


if __name__ == "__main__":
    main()
