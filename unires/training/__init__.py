"""Training UniRES with Accelerate: arguments, the collator, the loop, the model card, the budget probe.

The names below are imported on first use, so that `unires.training.arguments` (what `examples/train.py --help`
needs) loads without torch or accelerate.
"""

from importlib import import_module as _import_module

_EXPORTS = {
    "arguments": ("DataArguments", "ModelArguments", "UniRESTrainingArguments"),
    "collator": ("MRESTrainingCollator",),
    "run": ("build_model", "build_processor", "run_training"),
    "trainer": ("UniRESTrainer",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'unires.training' has no attribute {name!r}")
    value = getattr(_import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
