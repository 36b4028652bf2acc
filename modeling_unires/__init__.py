"""UniRES: multi-granularity referring expression segmentation as a transformers model.

Importing this package registers `UniRESConfig` / `UniRESModel` / `UniRESImageProcessor` / `UniRESProcessor` with
transformers' `AutoConfig`, `AutoModel`, `AutoImageProcessor` and `AutoProcessor`, and the pipeline task
`"referring-expression-segmentation"` (and, where transformers has it, `"promptable-concept-segmentation"` for UniRES
models). The classes are also registered for their auto classes, so `save_pretrained`
writes `auto_map` and copies the code files: a saved checkpoint loads with `trust_remote_code=True` without this
package. The model's `save_pretrained` also writes `custom_pipelines` and the pipeline's code (as
`Pipeline.save_pretrained` does for a registered pipeline), so that `pipeline(..., trust_remote_code=True)` works too.

`modeling_unires.py` is the model's one definition (the forward training uses); `enable_fast_inference(model)`
(`fast_inference_unires.py`) gives a model instance inference-only layers for the CPU, and `UniRESImageProcessorFast`
(`image_processing_unires_fast.py`) the fast logits-to-masks kernel. The pipeline uses both by default on a CPU.
"""

from importlib.metadata import version as _distribution_version

__version__ = _distribution_version("unires")  # pyproject.toml's version, one for the six packages

from .configuration_unires import UniRESConfig
from .fast_inference_unires import disable_fast_inference, enable_fast_inference
from .image_processing_unires import UniRESImageProcessor
from .image_processing_unires_fast import UniRESImageProcessorFast
from .modeling_unires import UniRESModel, UniRESOutput, UniRESPreTrainedModel
from .pipeline_unires import (
    CONCEPT_TASK,
    PIPELINE_TASK,
    ReferringExpressionSegmentationPipeline,
    alias_concept_task,
    custom_pipelines_entry,
)
from .processing_unires import UniRESProcessor
from .tokenization_local import build_clip_tokenizer


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
    if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            PIPELINE_TASK,
            pipeline_class=ReferringExpressionSegmentationPipeline,
            pt_model=AutoModel,
            type="multimodal",
        )
    # Where transformers has `promptable-concept-segmentation` (pull request 43612), a UniRES model gets our pipeline
    # under that name too; otherwise the pipeline takes that task's input form under its own name.
    alias_concept_task(UniRESConfig, UniRESModel)


_register()

__all__ = [
    "CONCEPT_TASK",
    "PIPELINE_TASK",
    "ReferringExpressionSegmentationPipeline",
    "UniRESConfig",
    "UniRESImageProcessor",
    "UniRESImageProcessorFast",
    "UniRESModel",
    "UniRESOutput",
    "UniRESPreTrainedModel",
    "UniRESProcessor",
    "build_clip_tokenizer",
    "custom_pipelines_entry",
    "disable_fast_inference",
    "enable_fast_inference",
]
