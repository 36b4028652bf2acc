"""Tiny, randomly initialised models built from configs offline, for the tests and the benchmarks.

They live with the tests, as transformers' model testers do, and not in the wheel: `tests/` is on `sys.path` under
pytest (its conftest.py), and `benchmarks/common.py` puts it there for the benchmark scripts. Nothing shipped imports
them (tests/test_packaging.py checks the wheel). One module per package whose models they stand in for.
"""
