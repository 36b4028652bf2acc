"""Settings for the model tests: the markers transformers' common model tests use, and one CPU thread."""

import pytest
import torch


def pytest_configure(config):
    # transformers registers these in its own conftest, which is not imported here.
    for marker in ("slow", "accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test",
                   "torch_compile_test"):
        config.addinivalue_line("markers", f"{marker}: set by transformers' common model tests")


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    """The models here are tiny: a second CPU thread adds no speed, and on a shared machine its OpenMP spin-waiting
    multiplies the time of these tests several-fold (transformers' common tests: about 5x on 2 loaded cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
