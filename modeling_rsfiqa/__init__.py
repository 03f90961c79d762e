"""rsfiqa: region-aware image quality assessment, Hugging Face native.

``import modeling_rsfiqa`` registers the Auto classes (AutoConfig, AutoModel, AutoImageProcessor,
AutoProcessor) and the ``image-quality`` pipeline, and marks the classes for Hub remote code so that a
saved folder also loads with ``trust_remote_code=True`` where this package is not installed.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_rsfiqa import RSFIQAConfig
from .image_io import ImageLoadError, load_image_rgb
from .image_processing_rsfiqa import RSFIQAImageProcessor, RSFIQAImageProcessorPil
from .modeling_rsfiqa import RSFIQAForQualityScoring, RSFIQAOutput, RSFIQAPreTrainedModel
from .partition import SamRegionPartitioner, masks_to_label_map, superpixel_partition
from .pipeline_rsfiqa import ImageQualityPipeline
from .processing_rsfiqa import RSFIQAProcessor
from .runtime import tune_cpu_allocator

__version__ = "0.1.0"

#: The trained default model shipped inside the package (``rsfiqa-mobile``); see its model card.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

__all__ = [
    "RSFIQAConfig",
    "RSFIQAForQualityScoring",
    "RSFIQAPreTrainedModel",
    "RSFIQAOutput",
    "RSFIQAImageProcessor",
    "RSFIQAImageProcessorPil",
    "RSFIQAProcessor",
    "ImageQualityPipeline",
    "ImageLoadError",
    "SamRegionPartitioner",
    "DEFAULT_MODEL_DIR",
    "load_image_rgb",
    "masks_to_label_map",
    "superpixel_partition",
    "tune_cpu_allocator",
]

AutoConfig.register(RSFIQAConfig.model_type, RSFIQAConfig, exist_ok=True)
AutoModel.register(RSFIQAConfig, RSFIQAForQualityScoring, exist_ok=True)
AutoImageProcessor.register(
    RSFIQAConfig,
    image_processor_classes={"torchvision": RSFIQAImageProcessor, "pil": RSFIQAImageProcessorPil},
    exist_ok=True,
)
AutoProcessor.register(RSFIQAConfig, RSFIQAProcessor, exist_ok=True)

# Hub remote code: save_pretrained copies the module files and writes `auto_map`.
RSFIQAConfig.register_for_auto_class()
RSFIQAForQualityScoring.register_for_auto_class("AutoModel")
RSFIQAImageProcessor.register_for_auto_class("AutoImageProcessor")
RSFIQAProcessor.register_for_auto_class("AutoProcessor")

PIPELINE_REGISTRY.register_pipeline(
    "image-quality",
    pipeline_class=ImageQualityPipeline,
    pt_model=AutoModel,
    default={"model": (str(DEFAULT_MODEL_DIR), None)},
    type="image",
)
