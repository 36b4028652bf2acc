"""UniRES: multi-granularity referring expression segmentation as a transformers model.

Importing this package registers `UniRESConfig` / `UniRESModel` / `UniRESImageProcessor` / `UniRESProcessor` with
transformers' `AutoConfig`, `AutoModel`, `AutoImageProcessor` and `AutoProcessor`, and the pipeline task
`"referring-expression-segmentation"`. The classes are also registered for their auto classes, so `save_pretrained`
writes `auto_map` and copies the code files: a saved checkpoint loads with `trust_remote_code=True` without this
package. The model's `save_pretrained` also writes `custom_pipelines` and the pipeline's code (as
`Pipeline.save_pretrained` does for a registered pipeline), so that `pipeline(..., trust_remote_code=True)` works too.
"""

import functools as _functools

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the five packages

from .configuration_unires import UniRESConfig
from .image_processing_unires import UniRESImageProcessor
from .modeling_unires import UniRESModel, UniRESOutput, UniRESPreTrainedModel
from .pipeline_unires import (
    PIPELINE_TASK,
    ReferringExpressionSegmentationPipeline,
    custom_pipelines_entry,
    save_pipeline_code,
)
from .processing_unires import UniRESProcessor
from .tokenization_local import build_clip_tokenizer


def _carrying_the_pipeline(save_pretrained):
    """
    `UniRESModel.save_pretrained` that also writes `custom_pipelines` into `config.json` and copies the pipeline's
    code beside the model's, as `Pipeline.save_pretrained` does for a pipeline in `PIPELINE_REGISTRY`: every
    checkpoint (the trainer's, the demo's) then carries its pipeline as remote code, not only one saved through a
    pipeline. With `push_to_hub=True`, the folder is saved first and then pushed with the pipeline code in it.
    """
    if getattr(save_pretrained, "_carries_pipeline", False):
        return save_pretrained

    @_functools.wraps(save_pretrained)
    def wrapper(self, save_directory, *args, push_to_hub=False, **kwargs):
        stored = dict(self.config.__dict__.get("custom_pipelines") or {})
        self.config.custom_pipelines = {**stored, **custom_pipelines_entry()}
        hub_kwargs = {key: kwargs.pop(key) for key in _PUSH_KWARGS if key in kwargs}
        result = save_pretrained(self, save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            save_pipeline_code(save_directory)
        if push_to_hub:
            import os

            if "max_shard_size" in kwargs:
                hub_kwargs["max_shard_size"] = kwargs["max_shard_size"]
            repo_id = hub_kwargs.pop("repo_id", None) or os.path.basename(os.path.normpath(save_directory))
            self.push_to_hub(repo_id, **hub_kwargs)  # saves again (through this method) into a folder it uploads
        return result

    wrapper._carries_pipeline = True
    return wrapper


class _CustomPipelinesServedByThePackage:
    """
    `UniRESConfig.custom_pipelines` while this package is imported: `config.json`'s value is kept as it is (and saved
    again), but reading it leaves out the tasks that `PIPELINE_REGISTRY` serves with this package's pipeline.

    transformers' `pipeline()` treats every task in `config.custom_pipelines` as remote code (it refuses without
    `trust_remote_code=True` even when the task is registered here); without this, `import modeling_unires;
    pipeline(TASK, model=folder)` would stop working for every checkpoint that carries its pipeline. Where the
    package is not installed, the remote-code config has no such descriptor and `pipeline()` reads the entry.
    """

    def __get__(self, config, owner=None):
        if config is None:
            return self
        from transformers.pipelines import PIPELINE_REGISTRY

        stored = config.__dict__.get("custom_pipelines") or {}
        registered = PIPELINE_REGISTRY.supported_tasks
        return {
            task: info
            for task, info in stored.items()
            if registered.get(task, {}).get("impl") is not ReferringExpressionSegmentationPipeline
        }

    def __set__(self, config, value):
        config.__dict__["custom_pipelines"] = value


_PUSH_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "token", "create_pr", "revision", "tags")


def _register():
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor
    from transformers.pipelines import PIPELINE_REGISTRY

    AutoConfig.register(UniRESConfig.model_type, UniRESConfig, exist_ok=True)
    AutoModel.register(UniRESConfig, UniRESModel, exist_ok=True)
    # One PIL/numpy implementation serves both backend names.
    image_processors = {"pil": UniRESImageProcessor, "torchvision": UniRESImageProcessor}
    AutoImageProcessor.register(UniRESConfig, image_processor_classes=image_processors, exist_ok=True)
    AutoProcessor.register(UniRESConfig, UniRESProcessor, exist_ok=True)
    # Saved checkpoints carry `auto_map` and these classes' code files (remote code).
    UniRESConfig.register_for_auto_class("AutoConfig")
    UniRESModel.register_for_auto_class("AutoModel")
    UniRESImageProcessor.register_for_auto_class("AutoImageProcessor")
    UniRESProcessor.register_for_auto_class("AutoProcessor")
    UniRESModel.save_pretrained = _carrying_the_pipeline(UniRESModel.save_pretrained)
    UniRESConfig.custom_pipelines = _CustomPipelinesServedByThePackage()
    if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK,
            pipeline_class=ReferringExpressionSegmentationPipeline,
            pt_model=AutoModel,
            type="multimodal",
        )


_register()

__all__ = [
    "PIPELINE_TASK",
    "ReferringExpressionSegmentationPipeline",
    "UniRESConfig",
    "UniRESImageProcessor",
    "UniRESModel",
    "UniRESOutput",
    "UniRESPreTrainedModel",
    "UniRESProcessor",
    "build_clip_tokenizer",
    "custom_pipelines_entry",
    "save_pipeline_code",
]
