"""The recipe of `make demo` as data: the model's config, its input size, the data sizes, the batch shape, the
optimiser and the splits (the CLIPSeg baseline trains on the same terms, `unires.baselines.clipseg`).

No import here beyond the standard library, so that `examples/demo.py --help` shows the demo's defaults without
loading torch; :mod:`unires.demo` runs the recipe.
"""

# The demo's model: CLIP towers of width 128, 96×96 input with 8×8 patches (144 visual tokens). Two options that
# are off in the paper's model buy most of the demo's accuracy within its CPU budget: the decoder works on 2×2-pooled
# tokens (a quarter of the per-expression cost, so ~1.8x the steps) and a full-resolution pixel branch lets masks
# follow object edges inside a patch. The decoder's position encoding (on by default, as in the paper's model) is
# what grounds "on the left" / "the topmost ...": without it those expressions stayed near 42 mIoU.
DEMO_IMAGE_SIZE = 96
DEMO_CONFIG = dict(
    vision_config=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                       image_size=DEMO_IMAGE_SIZE, patch_size=8),
    text_config=dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4),
    num_low_group_tokens=16,
    num_high_group_tokens=4,
    decoder_hidden_size=128,
    decoder_num_attention_heads=4,
    decoder_stage1_layers=2,
    decoder_stage2_layers=1,
    decoder_intermediate_size=256,
    decoder_token_stride=2,
    pixel_decoder_channels=16,
)
# The demo's batch shape: 4 images, each encoded once for up to 16 of its expressions. Expressions are cheap beside
# the image encoding, and 16 instead of 8 gained about 3 mIoU at an equal budget (README, "make demo").
DEMO_BATCH_SIZE = 4
DEMO_REFERENTS_PER_IMAGE = 16
DEMO_SPLITS = ("train", "validation", "test", "test_unseen")
EVAL_SPLITS = ("validation", "test_unseen")
# The demo's data (MRES-Synth images per split) and optimiser (AdamW, cosine schedule with warm-up, clipping).
DEMO_NUM_TRAIN = 6000
DEMO_NUM_EVAL = 300  # each of validation, test and test_unseen
DEMO_LEARNING_RATE = 1e-3
DEMO_WEIGHT_DECAY = 5e-4
DEMO_WARMUP_RATIO = 0.05
DEMO_MAX_GRAD_NORM = 1.0
