r"""Fine-tune the dense captioner (LoRA) on COCO captions, Visual Genome regions and part data.

    accelerate launch examples/train_captioner.py \
        --coco_dir data/coco --visual_genome_dir data/vg --paco_dir data/paco \
        --mixture_weights coco_captions=1,visual_genome=2,paco=2 \
        --output_dir outputs/captioner --mixed_precision bf16 --gradient_checkpointing \
        --push_to_hub --hub_model_id your-org/mres-dense-captioner

One epoch is one pass of the weighted mixture, which ends when its first source is exhausted
(--mixture_stopping_strategy); --max_steps defines the run by optimizer steps instead.
"""
import logging
import sys

from transformers import HfArgumentParser

from captioner.arguments import CaptionerDataArguments, CaptionerModelArguments, CaptionerTrainingArguments
from run_support.cli import refuse_missing_paths


def main(argv=None):
    parser = HfArgumentParser((CaptionerModelArguments, CaptionerDataArguments, CaptionerTrainingArguments),
                              description=__doc__.strip().splitlines()[0])
    try:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # a value the arguments refuse (e.g. a negative --save_total_limit): one line
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    if not any([data_args.coco_dir, data_args.visual_genome_dir, data_args.paco_dir, data_args.partimagenet_dir]):
        parser.error("give at least one of --coco_dir, --visual_genome_dir, --paco_dir, --partimagenet_dir")
    # A mistyped path is named as one now, before a folder is made or torch is imported.
    refuse_missing_paths(parser, local_or_hub=[("--base_model", model_args.base_model, "model")],
                         local=[(f"--{name}", getattr(data_args, name), "folder")
                                for name in ("coco_dir", "visual_genome_dir", "paco_dir", "partimagenet_dir")])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from captioner.train import train  # torch, accelerate and the model: after the command line is read

    result = train(model_args, data_args, training_args)
    print(f"trained {result.global_step} steps; adapter saved in {result.output_dir}")


if __name__ == "__main__":
    sys.exit(main())
