"""From-scratch setup helpers: config overrides."""
import pytest

from unires.training.scratch import override_config_kwargs


def test_config_overrides_merge_sub_configs_and_replace_the_rest():
    base = {"vision_config": {"hidden_size": 128, "patch_size": 8}, "decoder_token_stride": 2}
    merged = override_config_kwargs(base, {"vision_config": {"patch_size": 6}, "decoder_token_stride": 1})
    assert merged == {"vision_config": {"hidden_size": 128, "patch_size": 6}, "decoder_token_stride": 1}
    assert base["vision_config"]["patch_size"] == 8  # the demo's own config is left alone
    with pytest.raises(ValueError, match="override of text_config must be a dict"):
        override_config_kwargs(base, {"text_config": 3})
