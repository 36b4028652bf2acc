"""The scripts' `--quantize` names are the ones `quantization_config` knows, each of them accepted."""

import argparse

import pytest

from modeling_unires.quantization_unires import QUANTIZE_CHOICES, quantization_config
from unires.quantize_option import QUANTIZE_CHOICES as OPTION_CHOICES
from unires.quantize_option import add_quantize_argument


def test_option_names_are_quantization_config_names():
    assert OPTION_CHOICES == QUANTIZE_CHOICES


def test_option_parses_every_name_and_refuses_others():
    parser = argparse.ArgumentParser()
    add_quantize_argument(parser)
    assert parser.parse_args([]).quantize == "none"
    assert quantization_config(parser.parse_args([]).quantize) is None
    for name in OPTION_CHOICES:
        assert parser.parse_args(["--quantize", name]).quantize == name
    with pytest.raises(SystemExit):
        parser.parse_args(["--quantize", "int4"])
