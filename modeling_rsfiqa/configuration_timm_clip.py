"""Configuration of :class:`~.modeling_timm_clip.TimmCLIPModel`: a timm CNN vision tower + a CLIP text tower.

The small shipped Q-CLIP video model (``qclip-mobile``) uses it: no pretrained contrastive model can be had
offline, so the vision side is an ImageNet CNN (MobileNetV2) and the text side a small, FROZEN, RANDOMLY
initialised CLIP text transformer (fixed seed). Q-CLIP's learnable context vectors, adapters and w carry the
learning (Mi et al., arXiv 2508.06092).
"""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

__all__ = ["TimmCLIPConfig"]


class TimmCLIPConfig(PreTrainedConfig):
    r"""A two-tower contrastive model: timm CNN (e.g. ``mobilenetv2_100``) + CLIP text tower.

    Args:
        vision_model_name: timm architecture with ``conv_stem`` / ``blocks`` (stages) / ``conv_head`` (the
            EfficientNet-family layout, MobileNetV2 included).
        vision_kwargs: extra ``timm.create_model`` arguments.
        adapted_stage: index of the stage whose blocks are exposed as the tower's ``blocks`` (the ones Q-CLIP's
            E-SCMA may adapt; a CNN's blocks change width from stage to stage, E-SCMA needs one width). Those
            blocks run on channels-last ``(B, H, W, C)`` tensors so that E-SCMA's Linear layers act on the
            channels of every position (a 1x1 convolution).
        vision_pretrained: the ImageNet weights (a ``.safetensors`` file) read by
            :meth:`TimmCLIPModel.load_vision_weights`; never read in ``__init__``.
        text_config: `CLIPTextConfig` of the text tower.
        text_seed: the seed of the text tower's random initialisation (it is frozen and saved with the model).
        projection_dim: the shared embedding size.
    """

    model_type = "qclip_timm_clip"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_text_model")
    }

    vision_model_name: str = "mobilenetv2_100"
    vision_kwargs: dict | None = None
    adapted_stage: int = 5
    vision_pretrained: str | None = None
    text_config: dict | PreTrainedConfig | None = None
    text_seed: int = 0
    projection_dim: int = 256
    initializer_range: float = 0.02


AutoConfig.register(TimmCLIPConfig.model_type, TimmCLIPConfig, exist_ok=True)
