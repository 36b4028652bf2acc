#!/usr/bin/env python
"""Speed of the data engine's stages, and SAM's cost of 32 boxes vs 1 box on one image encoding.

Prints one JSON line per figure, each with its raw timings, measured in one run on one device:

- ``stage``: images/s of each stage (load images, object masks, part vocabulary, part masks,
  captions, CLIP filter) on the same batch of images, each stage fed the previous one's output;
- ``sam_boxes``: seconds for one image with 1 box and with 32 boxes through the object-mask
  path (encode once + decode the boxes + stability + RLE), and their ratio (target <= 1.5);
- ``projection``: the stages' seconds per image times 1M images, in hours, and times Objects365's
  1.74M images: GPU-hours in all and wall-clock hours on ``--num_gpus`` GPUs (one shard task per
  GPU, as the runner pins them; the runner's own I/O and bookkeeping, 0.4-1.7 ms per image, are
  measured by the runner, not here).

Each ``stage`` line also gives the GPU memory: ``gpu_peak_gib`` (the most allocated while the stage
ran, every model's weights included) and ``gpu_stage_gib`` (that peak less what was allocated
before it: the stage's activations), and its own share of the Objects365 projection.

Presets: ``tiny`` -- the tests' tiny models on MRES-Synth images (CPU: the stages' own
overhead); ``paper`` -- paper-size models with random weights (SAM ViT-H, OWLv2 B/16 at 960,
CLIP B/32, a Qwen3-VL of about 2B parameters as the captioner) on 1024x768 images with
``--boxes_per_image`` boxes, meant for CUDA. Thresholds are open so that every referent flows
to the next stage (random weights would otherwise reject everything): the timings are those of
keeping everything, an upper bound. Random captioners never stop early, so every caption is
``--caption_tokens`` long (the paper's captions average 4.6 words). The part vocabulary comes
from a fixed list (an LLM is asked once per category, 365 times for Objects365, then cached).

    python benchmarks/engine.py --preset tiny --device cpu
    python benchmarks/engine.py --preset paper --device cuda --images 16 --num_gpus 8
    python benchmarks/engine.py --preset paper --reduced --device cpu --images 1 --boxes_per_image 2 --caption_tokens 2 --repeats 1
    python benchmarks/engine.py --sam_only vit_b --device cpu --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from dataset_scripts.masks import encode_mask
from mres_engine.backends import SegmentAnythingSegmenter, xywh_to_xyxy
from mres_engine.stages.captions import Captions
from mres_engine.stages.clip_filter import ClipFilter
from mres_engine.readers.detection import read_detection_manifest
from mres_engine.stages.load_images import LoadImages
from mres_engine.stages.object_masks import ObjectMasks
from mres_engine.stages.part_masks import DetectorPartFinder, PartMasks
from mres_engine.stages.part_vocabulary import PartVocabulary
import common  # noqa: F401  (puts tests/ on sys.path for tiny_models)
from tiny_models.engine import (
    build_tiny_clip,
    build_tiny_clip_tokenizer,
    build_tiny_owlv2,
    build_tiny_segment_anything,
    write_synth_detection_set,
)

PART_NAMES = ["left part", "right part", "top part", "bottom part", "middle part", "edge"]
OBJECTS365_IMAGES = 1_742_289  # Objects365 v2 train (Shao et al., 2019): the engine's input in the paper
GIB = 1024**3


class FixedPartNames:
    """Every category gets the same part names (the benchmark's stand-in for a cached vocabulary)."""

    def __init__(self, names):
        self.names = names

    def names_for(self, category):
        return self.names


class NeverTruncated:
    """Pass a captioner's texts on as finished, so that the CLIP stage has sentences to score."""

    def __init__(self, captioner):
        self.captioner = captioner

    def caption_requests_full(self, requests):
        from captioner.generate import BoxCaption

        return [BoxCaption(c.text or "thing", False) for c in self.captioner.caption_requests_full(requests)]


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def paper_captioner(device, dtype, reduced=False):
    """A randomly initialised Qwen3-VL with Qwen3-VL-2B's dimensions (text 28 x 2048, vision 24 x 1024);
    ``reduced``: 2 text and 3 vision layers of the same widths (a CPU check of the code path, not a speed figure)."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from captioner import DenseCaptioner
    from tiny_models.captioner import build_tiny_processor

    processor = build_tiny_processor(image_side=448)
    ids = processor.tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=2 if reduced else 28,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                         rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                          "mrope_interleaved": True},
                         pad_token_id=ids("<|endoftext|>"), tie_word_embeddings=True),
        vision_config=dict(depth=3 if reduced else 24, hidden_size=1024, intermediate_size=4096, num_heads=16, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304,
                           deepstack_visual_indexes=[0, 1, 2] if reduced else [5, 11, 17]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=True,
    )
    with torch.device(device):
        model = Qwen3VLForConditionalGeneration(config).to(dtype)
    model.generation_config.eos_token_id = ids("<|im_end|>")
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    return model, processor, DenseCaptioner


def build_models(preset, device, dtype, caption_tokens, reduced=False):
    """(SAM, OWLv2 + processor, captioner, CLIP + processor) for the preset, on ``device``.

    ``reduced`` (paper preset): SAM ViT-B, OWLv2 at 480 and a 2-layer captioner, to check the paper path on a CPU."""
    from captioner import DenseCaptioner
    from tiny_models.captioner import build_tiny_model, build_tiny_processor

    if preset == "tiny":
        sam = build_tiny_segment_anything(image_size=64)
        owl, owl_processor = build_tiny_owlv2()
        processor = build_tiny_processor()
        captioner = DenseCaptioner(build_tiny_model(processor).to(device), processor, max_new_tokens=caption_tokens)
        clip, clip_processor = build_tiny_clip()
        return sam.to(device), (owl.to(device), owl_processor), captioner, (clip.to(device), clip_processor)

    from segment_anything import sam_model_registry
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    owl_size = 480 if reduced else 960
    with torch.device(device):
        sam = sam_model_registry["vit_b" if reduced else "vit_h"]()  # SAM's own default dims: ViT-H, 1024 input
        owl = Owlv2ForObjectDetection(Owlv2Config(vision_config={"image_size": owl_size, "patch_size": 16})).to(dtype)
        clip = CLIPModel(CLIPConfig()).to(dtype)  # CLIPConfig's defaults are ViT-B/32 at 224
    owl_processor = Owlv2Processor(Owlv2ImageProcessor(size={"height": owl_size, "width": owl_size}), build_tiny_clip_tokenizer())
    clip_processor = CLIPProcessor(CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}),
                                   build_tiny_clip_tokenizer(model_max_length=77))
    model, processor, dense_captioner = paper_captioner(device, dtype, reduced)
    captioner = dense_captioner(model, processor, max_new_tokens=caption_tokens)
    return sam.eval(), (owl.eval(), owl_processor), captioner, (clip.eval(), clip_processor)


def make_records(preset, folder, images, boxes_per_image, seed=0):
    if preset == "tiny":
        annotations_json, image_dir, _ = write_synth_detection_set(folder, num_images=images, image_size=96, seed=seed)
        return read_detection_manifest(annotations_json, image_dir, source="mres-synth")
    rng = np.random.default_rng(seed)
    width, height = 1024, 768
    manifest = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i in range(images):
        name = f"{i:04d}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(os.path.join(folder, name))
        manifest["images"].append({"id": i, "file_name": name, "width": width, "height": height})
        for _ in range(boxes_per_image):
            w, h = rng.uniform(64, 400), rng.uniform(64, 300)
            manifest["annotations"].append({"id": len(manifest["annotations"]), "image_id": i, "category_id": 1,
                                            "bbox": [rng.uniform(0, width - w), rng.uniform(0, height - h), w, h]})
    return read_detection_manifest(manifest, folder, source="benchmark")


def sam_boxes(segmenter, image, boxes_xyxy, device, repeats):
    """Seconds for the object-mask path (encode once, decode the boxes, stability, RLE) with 1 box and with
    all ``boxes_xyxy``, timed alternately (1, N, 1, N, ...) after a warm-up of each so that a drifting machine
    load cancels out; returns the per-pair seconds and the median per-pair ratio."""
    def once(boxes):
        sync(device)
        start = time.perf_counter()
        result = segmenter.segment(image, segmenter.encode(image), boxes)
        for mask in result.masks:
            encode_mask(mask)
        sync(device)
        return time.perf_counter() - start

    once(boxes_xyxy[:1]), once(boxes_xyxy)
    pairs = [(once(boxes_xyxy[:1]), once(boxes_xyxy)) for _ in range(repeats)]
    return pairs, float(np.median([many / one for one, many in pairs]))


def sam_figure(segmenter, image, device, repeats, common):
    rng = np.random.default_rng(0)
    w, h = image.width, image.height
    boxes = xywh_to_xyxy([[rng.uniform(0, w / 2), rng.uniform(0, h / 2), rng.uniform(w / 8, w / 2), rng.uniform(h / 8, h / 2)]
                          for _ in range(32)])
    pairs, ratio = sam_boxes(segmenter, image, boxes, device, repeats)
    return {"figure": "sam_boxes", **common, "image_size": [w, h], "boxes": len(boxes),
            "seconds_1_box": [round(one, 4) for one, _ in pairs], "seconds_32_boxes": [round(many, 4) for _, many in pairs],
            "ratio": round(ratio, 3), "target": 1.5}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["tiny", "paper"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="OWLv2, CLIP and captioner dtype (default: bfloat16 on CUDA, float32 on CPU); SAM runs in float32.")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--boxes_per_image", type=int, default=16, help="paper preset (Objects365 averages about 15 objects per image)")
    parser.add_argument("--caption_tokens", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5, help="alternating (1 box, 32 boxes) pairs for the SAM ratio")
    parser.add_argument("--num_gpus", type=int, default=8, help="GPUs of the Objects365 projection (one shard task per GPU)")
    parser.add_argument("--reduced", action="store_true",
                        help="paper preset at reduced size (SAM ViT-B, OWLv2 at 480, 2-layer captioner): checks the paper path on a CPU")
    parser.add_argument("--sam_only", choices=["vit_b", "vit_l", "vit_h"], default=None,
                        help="only the SAM figure, with a random-weight segment_anything model of this size on a 1024x768 image "
                             "(every SAM has the same prompt decoder; ViT-B has the cheapest encoder, so its ratio bounds ViT-H's)")
    args = parser.parse_args()
    device = args.device
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    torch.manual_seed(0)
    common = {"preset": args.preset + ("-reduced" if args.reduced else ""),
              "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"}
    cuda = device.startswith("cuda")

    if args.sam_only:
        from segment_anything import sam_model_registry

        with torch.device(device):
            segmenter = SegmentAnythingSegmenter(sam_model_registry[args.sam_only]().eval(), device=device)
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 255, (768, 1024, 3), dtype=np.uint8))
        print(json.dumps(sam_figure(segmenter, image, device, args.repeats, {**common, "preset": f"sam-{args.sam_only}"})))
        return
    sam, (owl, owl_processor), captioner, (clip, clip_processor) = build_models(args.preset, device, dtype, args.caption_tokens,
                                                                                reduced=args.reduced)
    segmenter = SegmentAnythingSegmenter(sam, device=device)
    stages = [
        LoadImages(),
        ObjectMasks(segmenter, min_iou=-1.0, min_stability=-1.0),
        PartVocabulary(FixedPartNames(PART_NAMES)),
        PartMasks(DetectorPartFinder(segmenter, owl, owl_processor, device=device, min_score=0.0, max_per_name=1),
                  min_inside=0.0, dedup_overlap=1.01, min_iou=-1.0, min_stability=-1.0),
        Captions(NeverTruncated(captioner), max_new_tokens=args.caption_tokens),
        ClipFilter(clip, clip_processor, device=device, min_score=-1.0),
    ]
    with tempfile.TemporaryDirectory() as folder:
        os.makedirs(os.path.join(folder, "warmup"))
        warmup = make_records(args.preset, os.path.join(folder, "warmup"), 1, args.boxes_per_image, seed=1)
        for stage in stages:  # warm-up: first calls load kernels and caches
            warmup = stage(warmup).records
        records = make_records(args.preset, folder, args.images, args.boxes_per_image)
        seconds_per_image = 0.0
        images = len(records)
        for stage in stages:
            referents_in = sum(len(r.referents) for r in records)
            sync(device)
            if cuda:
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            out = stage(records)
            sync(device)
            seconds = time.perf_counter() - start
            seconds_per_image += seconds / images
            peak = torch.cuda.max_memory_allocated(device) if cuda else None
            print(json.dumps({"figure": "stage", **common, "stage": stage.name, "images": len(records), "seconds": round(seconds, 4),
                              "images_per_s": round(len(records) / seconds, 3), "referents_in": referents_in,
                              "referents_out": sum(len(r.referents) for r in out.records), "rejects": len(out.rejects),
                              "gpu_peak_gib": round(peak / GIB, 2) if cuda else None,
                              "gpu_stage_gib": round((peak - before) / GIB, 2) if cuda else None,
                              "objects365_gpu_hours": round(seconds / images * OBJECTS365_IMAGES / 3600, 1)}))
            records = out.records
        gpu_hours = seconds_per_image * OBJECTS365_IMAGES / 3600
        print(json.dumps({"figure": "projection", **common, "seconds_per_image": round(seconds_per_image, 4),
                          "hours_per_1M_images": round(seconds_per_image * 1e6 / 3600, 1),
                          "objects365_images": OBJECTS365_IMAGES, "objects365_gpu_hours": round(gpu_hours, 1),
                          "num_gpus": args.num_gpus, "objects365_hours_on_num_gpus": round(gpu_hours / args.num_gpus, 1),
                          "gpu_peak_gib": round(torch.cuda.max_memory_allocated(device) / GIB, 2) if cuda else None,
                          "boxes_per_image": args.boxes_per_image if args.preset == "paper" else None,
                          "caption_tokens": args.caption_tokens}))

        image = LoadImages()(make_records(args.preset, os.path.join(folder, "warmup"), 1, 32, seed=2)).records[0].image
        print(json.dumps(sam_figure(segmenter, image, device, args.repeats, common)))

if __name__ == "__main__":
    main()
