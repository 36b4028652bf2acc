#!/usr/bin/env python
"""Demo training steps/s on CPU and where a step's time goes: data + collate, forward, backward, optimizer.

The demo's model (`unires.demo.DEMO_CONFIG`, 96x96, tokenizer trained on the data's sentences) trained on MRES-Synth
built in a temporary folder, with the demo's batch shape (`DEMO_BATCH_SIZE` images x up to `DEMO_REFERENTS_PER_IMAGE` expressions) per step, AdamW, gradient
clipping at 1.0. Each step is timed stage by stage (reading 4 rows of the map-style dataset, which decodes their
images, + `MRESTrainingCollator`; forward with the loss; backward; clip + AdamW step + zero_grad), after warm-up
steps. There is no target for steps/s: the figure tells how many steps `make demo`'s budget buys and what to speed up.

A second figure checks the shared-encoding path against its parts (inference): one forward over the batch's images and
their expressions vs `get_image_embeddings` on those images plus one forward from the embeddings.

    python benchmarks/demo_training.py [--steps 20] [--profile]
"""

import os
import tempfile

import torch

from dataset_scripts.load import load_mres_dataset
from dataset_scripts.mres_synth import build_mres_synth
from modeling_unires import UniRESConfig, UniRESImageProcessor, UniRESModel, UniRESProcessor, build_clip_tokenizer
from unires.demo import DEMO_BATCH_SIZE, DEMO_CONFIG, DEMO_IMAGE_SIZE, DEMO_REFERENTS_PER_IMAGE
from unires.training import MRESTrainingCollator
from unires.training.scratch import all_sentences

from common import base_parser, device_info, emit, median, now, paired_ratio, paired_timings, parse_args, \
    profile_summary, rounded

STAGES = ("data_collate", "forward", "backward", "optimizer")


def main():
    parser = base_parser(__doc__)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20)")
    parser.add_argument("--warmup_steps", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=DEMO_BATCH_SIZE)
    parser.add_argument("--referents_per_image", type=int, default=DEMO_REFERENTS_PER_IMAGE)
    args = parse_args(parser)
    steps = args.steps or (2 if args.quick else 20)
    device = args.device
    info = device_info(device)

    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        counts = {"train": 64, "validation": 0, "test": 0, "test_unseen": 0}
        build_mres_synth(os.path.join(tmp, "data"), image_size=DEMO_IMAGE_SIZE, num_images=counts,
                         cache_dir=os.path.join(tmp, "cache"))
        rows = load_mres_dataset([os.path.join(tmp, "data")], "train")
        tokenizer = build_clip_tokenizer(all_sentences(rows), vocab_size=1200, model_max_length=17)
        config = UniRESConfig(**DEMO_CONFIG).fit_to_tokenizer(tokenizer)
        processor = UniRESProcessor(UniRESImageProcessor(size=config.image_size, mask_threshold=config.mask_threshold),
                                    tokenizer, text_max_length=config.text_max_length)
        collator = MRESTrainingCollator(processor, args.referents_per_image, seed=0)
        torch.manual_seed(0)
        model = UniRESModel(config).to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=5e-4)

        def step(index, record=None):
            marks = [now(device)]
            start = index * args.batch_size
            batch = collator([rows[(start + i) % len(rows)] for i in range(args.batch_size)])
            batch = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            marks.append(now(device))
            loss = model(**batch).loss
            marks.append(now(device))
            loss.backward()
            marks.append(now(device))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            marks.append(now(device))
            if record is not None:
                for stage, begin, end in zip(STAGES, marks, marks[1:]):
                    record[stage].append(end - begin)
                record["step"].append(marks[-1] - marks[0])

        for index in range(args.warmup_steps):
            step(index)
        record = {name: [] for name in (*STAGES, "step")}
        for index in range(steps):
            step(args.warmup_steps + index, record)
        if args.profile:
            profile_summary(lambda: step(0), device, f"one demo training step ({args.batch_size} images x {args.referents_per_image} expressions)", row_limit=20)

        medians = {name: median(values) for name, values in record.items()}
        stage_sum = sum(medians[s] for s in STAGES)
        emit("demo_training_steps_per_s", 1.0 / medians["step"], None,
             description=f"demo training steps/s ({args.batch_size} images x {args.referents_per_image} expressions, "
                         f"{DEMO_IMAGE_SIZE}x{DEMO_IMAGE_SIZE}, DEMO_CONFIG)",
             breakdown_median_s={s: round(medians[s], 5) for s in STAGES},
             breakdown_share={s: round(medians[s] / stage_sum, 3) for s in STAGES},
             step_median_s=round(medians["step"], 5), timings_s=rounded(record),
             setup=dict(steps=steps, warmup_steps=args.warmup_steps, batch_size=args.batch_size,
                        referents_per_image=args.referents_per_image, optimizer="AdamW + clip_grad_norm 1.0",
                        data="map-style MRES-Synth rows (image decode) + MRESTrainingCollator"),
             device=info)

        # The shared-encoding forward against its parts, in inference.
        model.eval()
        batch = collator([rows[i] for i in range(args.batch_size)])
        inputs = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor) and k != "labels"}
        text_inputs = {k: v for k, v in inputs.items() if k != "pixel_values"}

        def full():
            model(**inputs)

        def parts():
            embeddings = model.get_image_embeddings(inputs["pixel_values"])
            model(image_embeddings=embeddings, pixel_values=inputs["pixel_values"], **text_inputs)

        with torch.inference_mode():
            timings = paired_timings({"forward": full, "encode_then_decode": parts}, args.repeats or 20, device)
            if args.profile:
                profile_summary(full, device, f"demo forward, {args.batch_size} images x {args.referents_per_image} expressions (inference)")
        emit("demo_forward_over_encode_plus_decode", paired_ratio(timings["forward"], timings["encode_then_decode"]),
             None,
             description=f"demo model, {args.batch_size} images x {args.referents_per_image} expressions, inference: one forward / (get_image_embeddings + "
                         "forward from the embeddings); about 1 when the forward adds nothing to its parts",
             timings_s=rounded(timings), median_s={n: round(median(v), 5) for n, v in timings.items()},
             setup=dict(images=args.batch_size, expressions=len(inputs["input_ids"])), device=info)


if __name__ == "__main__":
    main()
