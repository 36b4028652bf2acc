"""Markers that transformers' common model tests (run by test_modeling_common_unires.py) put on some of their tests;
transformers registers them in its own conftest, which is not imported here."""


def pytest_configure(config):
    for marker in ("slow", "accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test"):
        config.addinivalue_line("markers", f"{marker}: set by transformers' common model tests")
