"""
transformers' common model and config tests (`ModelTesterMixin`, `ConfigTester`, from transformers' sdist: see
`transformers_common_tests.py`) run on a tiny UniRES, as transformers reviews a model it adds.

A test is overridden only where UniRES's layout differs from what the common test assumes, and skipped only where
UniRES does not have the feature; each says why.
"""

import copy
import unittest

import torch
from transformers.testing_utils import torch_device

from modeling_unires import UniRESConfig, UniRESModel
from tiny_models.unires import tiny_config_kwargs
from transformers_common_tests import import_common_test_module

ModelTesterMixin = import_common_test_module("test_modeling_common").ModelTesterMixin
ConfigTester = import_common_test_module("test_configuration_common").ConfigTester


class UniRESModelTester:
    """A tiny UniRES (`tiny_config_kwargs`: 2 ViT and 2 text layers, 4 + 2 group tokens) and inputs for it."""

    def __init__(self, parent, batch_size=2, image_size=32, seq_length=7, vocab_size=99, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.is_training = is_training
        kwargs = tiny_config_kwargs(image_size=image_size, text_max_length=seq_length)
        self.vision_config = kwargs["vision_config"]
        self.text_config = dict(kwargs["text_config"], vocab_size=vocab_size, max_position_embeddings=16)
        self.config_kwargs = {k: v for k, v in kwargs.items() if k not in ("vision_config", "text_config")}
        self.patch_size = self.vision_config["patch_size"]
        self.num_patches = (image_size // self.patch_size) ** 2
        self.hidden_size = self.vision_config["hidden_size"]
        self.num_hidden_layers = self.vision_config["num_hidden_layers"]
        self.num_attention_heads = self.vision_config["num_attention_heads"]

    def get_config(self):
        return UniRESConfig(vision_config=self.vision_config, text_config=self.text_config, **self.config_kwargs)

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        input_ids = torch.randint(1, self.vocab_size, (self.batch_size, self.seq_length), device=torch_device)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, self.seq_length // 2 :] = 0  # one padded expression
        pixel_values = torch.randn(self.batch_size, 3, self.image_size, self.image_size, device=torch_device)
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


class UniRESModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (UniRESModel,)
    # The common tests build inputs from `main_input_name` (pixel_values) alone unless told: UniRES also needs text.
    additional_model_inputs = ["input_ids"]
    # `test_can_init_all_missing_weights` skips models whose configuration file has no copyright year >= 2023 (the
    # files here have no copyright header); UniRES is new and must pass it: missing weights get the fresh-model init.
    test_can_init_all_missing_weights_before_2023 = True
    _is_composite = True  # a vision and a text sub-config, each with its own attention implementation

    def setUp(self):
        self.model_tester = UniRESModelTester(self)
        # has_text_modality=False: the vocabulary size lives in `text_config`, not on the top-level config (as CLIP's).
        self.config_tester = ConfigTester(
            self, config_class=UniRESConfig, has_text_modality=False,
            # Non-default UniRES values, which the config tests check survive JSON and save/load round trips.
            num_low_group_tokens=5, num_high_group_tokens=3, decoder_hidden_size=64, decoder_num_attention_heads=4,
            mask_head_type="upsample", mask_threshold=0.4, decoder_token_stride=2,
        )

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            # UniRES's labels are one binary mask per expression at input resolution.
            size = self.model_tester.image_size
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, size, size, device=torch_device)
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    # ------------------------------------------------------------------ overrides: UniRES's output layout

    def _expected_hidden_state_shapes(self, config):
        """Shapes of UniRESOutput's three hidden-state tuples for the tester's inputs (see UniRESOutput)."""
        tester = self.model_tester
        batch, cls_and_patches = tester.batch_size, 1 + tester.num_patches
        depth, insert = config.vision_config.num_hidden_layers, config.group_insert_layer
        # Input and layers before `group_insert_layer` carry the low-level group tokens, later layers the high-level.
        width = config.vision_config.hidden_size
        vision = [(batch, cls_and_patches + config.num_low_group_tokens, width)] * (insert + 1)
        vision += [(batch, cls_and_patches + config.num_high_group_tokens, width)] * (depth - insert)
        text = [(batch, tester.seq_length, config.text_config.hidden_size)] * (config.text_config.num_hidden_layers + 1)
        num_decoder = 1 + config.decoder_stage1_layers + config.decoder_stage2_layers
        decoder = [(batch, tester.num_patches, config.decoder_hidden_size)] * num_decoder
        return vision, text, decoder

    # Overridden: the common test reads a single `hidden_states` stack of one width. UniRES returns three stacks
    # (vision tower, text tower, decoder) of different widths and lengths, and the vision tower's token count changes
    # where the group tokens swap (as SamModelTest checks `vision_hidden_states` itself).
    def test_hidden_states_output(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        expected = self._expected_hidden_state_shapes(config)
        for via_config in (False, True):
            config = copy.deepcopy(config)
            inputs = dict(inputs_dict)
            if via_config:
                config.output_hidden_states = True
            else:
                inputs["output_hidden_states"] = True
            model = UniRESModel(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**inputs)
            shapes = tuple(
                [tuple(state.shape) for state in states]
                for states in (outputs.vision_hidden_states, outputs.text_hidden_states, outputs.decoder_hidden_states)
            )
            self.assertEqual(shapes, expected)
            # The decoder's last state is what the mask head reads: the stacks are the model's, not copies of inputs.
            self.assertFalse(torch.equal(outputs.decoder_hidden_states[0], outputs.decoder_hidden_states[-1]))

    # Overridden: the common test expects one self-attention map per `num_hidden_layers` over `seq_length` keys in
    # `attentions`. UniRES returns its own cross-attention maps in two stacks (as SamModelTest checks its
    # `vision_attentions` and `mask_decoder_attentions`): `region_filter_attentions` (low, then high group tokens over
    # the text tokens) and `decoder_attentions` (each stage-1 layer's visual over text tokens, then each stage-2
    # layer's visual over group tokens).
    def test_attention_outputs(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        tester = self.model_tester
        batch, heads, text_length = tester.batch_size, config.decoder_num_attention_heads, tester.seq_length
        expected_region_filter = [
            (batch, heads, config.num_low_group_tokens, text_length),
            (batch, heads, config.num_high_group_tokens, text_length),
        ]
        expected_decoder = [
            *[(batch, heads, tester.num_patches, text_length)] * config.decoder_stage1_layers,
            *[(batch, heads, tester.num_patches, config.num_group_tokens_used)] * config.decoder_stage2_layers,
        ]
        for via_config in (False, True):
            config = copy.deepcopy(config)
            inputs = dict(inputs_dict)
            if via_config:
                config._attn_implementation = "eager"  # transformers allows `output_attentions` in a config only then
                config.output_attentions = True
            else:
                inputs["output_attentions"] = True
            model = UniRESModel(config).to(torch_device).eval()
            with torch.no_grad():
                outputs = model(**inputs)
            self.assertEqual([tuple(a.shape) for a in outputs.region_filter_attentions], expected_region_filter)
            self.assertEqual([tuple(a.shape) for a in outputs.decoder_attentions], expected_decoder)
            for attention in (*outputs.region_filter_attentions, *outputs.decoder_attentions):  # softmax over keys
                torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1], device=torch_device))
            # Padded text tokens get no attention, from the region filter or from stage 1.
            padded = inputs_dict["attention_mask"][0] == 0
            self.assertTrue((outputs.region_filter_attentions[0][0][..., padded] == 0).all())
            self.assertTrue((outputs.decoder_attentions[0][0][..., padded] == 0).all())
            self.assertFalse(hasattr(outputs, "attentions"))  # no stack that mixes the kinds

    # Overridden: the common test reads `hidden_states[0]`; UniRES's first states are in its three stacks.
    def test_retain_grad_hidden_states_attentions(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        model = UniRESModel(config).to(torch_device)
        outputs = model(**inputs_dict, output_hidden_states=True, output_attentions=True)
        watched = [
            outputs.vision_hidden_states[0], outputs.text_hidden_states[0], outputs.decoder_hidden_states[0],
            outputs.region_filter_attentions[0], outputs.decoder_attentions[0],
        ]
        for tensor in watched:
            tensor.retain_grad()
        outputs.logits.flatten()[0].backward()
        for tensor in watched:
            self.assertIsNotNone(tensor.grad)
