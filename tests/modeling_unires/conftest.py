"""Markers that transformers' common model tests (run by test_modeling_common_unires.py) put on some of their tests;
transformers registers them in its own conftest, which is not imported here."""


def pytest_configure(config):
    for marker in ("slow", "accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "torch_compile_test"):
        config.addinivalue_line("markers", f"{marker}: set by transformers' common model tests")


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """The models here are tiny: a second CPU thread adds no speed, and on a shared machine its OpenMP spin-waiting
    multiplies the time of these tests several-fold (transformers' common tests: about 5x on 2 loaded cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
