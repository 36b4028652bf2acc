#!/usr/bin/env python
"""Train UniRES. Runs as `python examples/train.py ...` or `accelerate launch examples/train.py ...`.

Pre-training on MRES-32M (streaming), then fine-tuning on RefCOCO_m:

    accelerate launch --mixed_precision bf16 examples/train.py --clip_name_or_path openai/clip-vit-base-patch16 \
        --dataset org/mres-32m --streaming --max_steps 400000 --per_device_train_batch_size 16 \
        --learning_rate 1e-5 --warmup_ratio 0.1 --output_dir runs/pretrain
    accelerate launch examples/train.py --model_name_or_path runs/pretrain \
        --dataset org/refcoco-m --eval_split val --num_train_epochs 15 --output_dir runs/refcoco-m \
        --push_to_hub --hub_model_id org/unires

Resume after an interruption, or train a finished run longer: the same command with
`--resume_from_checkpoint latest` (and a larger `--max_steps`).

Every option: `python examples/train.py --help`. The logic lives in `unires.training`.
"""

from unires.training.cli import main

if __name__ == "__main__":
    main()
