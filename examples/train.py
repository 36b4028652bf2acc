#!/usr/bin/env python
"""Train UniRES. Runs as `python examples/train.py ...` or `accelerate launch examples/train.py ...`.

Pre-training on MRES-32M (streaming), then fine-tuning on RefCOCO_m:

    accelerate launch examples/train.py --clip_name_or_path openai/clip-vit-base-patch16 \
        --dataset org/mres-32m --streaming --max_steps 400000 --per_device_train_batch_size 16 \
        --learning_rate 1e-5 --warmup_ratio 0.1 --mixed_precision bf16 --output_dir runs/pretrain
    accelerate launch examples/train.py --model_name_or_path runs/pretrain \
        --dataset org/refcoco-m --eval_split val --num_train_epochs 15 --push_to_hub org/unires

Every option: `python examples/train.py --help`. The logic lives in `unires.training`.
"""

from unires.training.run import main

if __name__ == "__main__":
    main()
