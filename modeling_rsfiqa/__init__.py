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
#: Where the small ROI model (``SeagullForRegionQuality``, MobileNetV2) ships as the region-quality default.
DEFAULT_SEAGULL_DIR = Path(__file__).resolve().parent / "default_seagull"

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
    "DEFAULT_QCLIP_DIR",
    "DEFAULT_SEAGULL_DIR",
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

# ---------------------------------------------------------------------------------------------------------------
# Q-CLIP (video quality): config / video processor / processor / model, Auto classes and Hub remote code
# ---------------------------------------------------------------------------------------------------------------
from transformers import AutoVideoProcessor  # noqa: E402

from .configuration_qclip import PECoreCLIPConfig, QCLIPConfig  # noqa: E402
from .modeling_qclip import PECoreCLIPModel, QCLIPForVideoQualityScoring, QCLIPOutput  # noqa: E402
from .processing_qclip import QCLIPProcessor  # noqa: E402
from .video_io import VideoLoadError, VideoReader  # noqa: E402
from .video_processing_qclip import QCLIPVideoProcessor  # noqa: E402

__all__ += [
    "QCLIPConfig",
    "QCLIPForVideoQualityScoring",
    "QCLIPOutput",
    "QCLIPProcessor",
    "QCLIPVideoProcessor",
    "PECoreCLIPConfig",
    "PECoreCLIPModel",
    "VideoLoadError",
    "VideoReader",
]

AutoConfig.register(QCLIPConfig.model_type, QCLIPConfig, exist_ok=True)
AutoModel.register(QCLIPConfig, QCLIPForVideoQualityScoring, exist_ok=True)
AutoModel.register(PECoreCLIPConfig, PECoreCLIPModel, exist_ok=True)
AutoVideoProcessor.register(QCLIPConfig, QCLIPVideoProcessor, exist_ok=True)
AutoProcessor.register(QCLIPConfig, QCLIPProcessor, exist_ok=True)

QCLIPConfig.register_for_auto_class()
QCLIPForVideoQualityScoring.register_for_auto_class("AutoModel")
QCLIPVideoProcessor.register_for_auto_class("AutoVideoProcessor")
QCLIPProcessor.register_for_auto_class("AutoProcessor")

from .pipeline_qclip import VideoQualityPipeline  # noqa: E402

__all__ += ["VideoQualityPipeline"]

#: The small video model shipped inside the package (``qclip-mobile``); see its model card.
DEFAULT_QCLIP_DIR = Path(__file__).resolve().parent / "default_qclip"

PIPELINE_REGISTRY.register_pipeline(
    "video-quality",
    pipeline_class=VideoQualityPipeline,
    pt_model=AutoModel,
    default={"model": (str(DEFAULT_QCLIP_DIR), None)},
    type="video",
)

# SEAGULL (issue 9): ROI quality. The generative model answers with AutoModel and AutoModelForImageTextToText;
# the small ROI model (model_type "seagull_region") with AutoModel.
from transformers import AutoModelForImageTextToText  # noqa: E402

from .configuration_seagull import SeagullConfig, SeagullRegionConfig  # noqa: E402
from .image_processing_seagull import SeagullImageProcessor, SeagullImageProcessorPil  # noqa: E402
from .modeling_seagull import SeagullForConditionalGeneration, SeagullForRegionQuality  # noqa: E402
from .processing_seagull import RegionError, SeagullProcessor, SeagullRegionProcessor  # noqa: E402

__all__ += [
    "SeagullConfig",
    "SeagullRegionConfig",
    "SeagullForConditionalGeneration",
    "SeagullForRegionQuality",
    "SeagullImageProcessor",
    "SeagullImageProcessorPil",
    "SeagullProcessor",
    "SeagullRegionProcessor",
    "RegionError",
]

for _config, _processor in ((SeagullConfig, SeagullProcessor), (SeagullRegionConfig, SeagullRegionProcessor)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoImageProcessor.register(
        _config,
        image_processor_classes={"torchvision": SeagullImageProcessor, "pil": SeagullImageProcessorPil},
        exist_ok=True,
    )
    AutoProcessor.register(_config, _processor, exist_ok=True)
    _config.register_for_auto_class()
    _processor.register_for_auto_class("AutoProcessor")
AutoModel.register(SeagullConfig, SeagullForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(SeagullConfig, SeagullForConditionalGeneration, exist_ok=True)
AutoModel.register(SeagullRegionConfig, SeagullForRegionQuality, exist_ok=True)
SeagullForConditionalGeneration.register_for_auto_class("AutoModel")
SeagullForRegionQuality.register_for_auto_class("AutoModel")
SeagullImageProcessor.register_for_auto_class("AutoImageProcessor")

from .pipeline_seagull import RegionQualityPipeline  # noqa: E402

__all__ += ["RegionQualityPipeline"]

PIPELINE_REGISTRY.register_pipeline(
    "region-quality",
    pipeline_class=RegionQualityPipeline,
    pt_model=AutoModel,
    default={"model": (str(DEFAULT_SEAGULL_DIR), None)},
    type="multimodal",
)
