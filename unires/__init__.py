"""What users do with a UniRES model: train it (`unires.training`) and evaluate it (`unires.evaluation`).

The model itself is `modeling_unires` (transformers code that travels with every checkpoint);
the datasets are `dataset_scripts`. This package imports both and is imported by neither.
"""

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the six packages
