"""Shared by the SEAGULL tests: the tiny random ROI model (``seagull-region-mobile``'s architecture on timm's
``test_efficientnet`` backbone, small MFE and heads) as a config and as a saved folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modeling_rsfiqa.factory import preset_config

#: overrides of the ``seagull-region-mobile`` preset that make it tiny and random (no weights to read)
TINY_REGION_OVERRIDES: dict[str, Any] = dict(
    vision_backbone="test_efficientnet",
    vision_backbone_kwargs={},
    vision_feature_channels=[24, 32, 48, 64],
    image_size=64,
    mfe_hidden_size=16,
    mfe_num_heads=2,
    mfe_mlp_dim=32,
    local_crop_size=32,
    local_pool=2,
    local_mlp_hidden_size=16,
    region_embed_size=16,
    head_hidden_size=16,
    vision_pretrained=None,
)


def tiny_region_config(**overrides: Any):
    """The tiny ``SeagullRegionConfig`` (``overrides`` on top of :data:`TINY_REGION_OVERRIDES`)."""
    return preset_config("seagull-region-mobile", **{**TINY_REGION_OVERRIDES, **overrides})


def save_tiny_region_model(folder: str | Path, **overrides: Any) -> Path:
    """A random tiny ``SeagullForRegionQuality`` + its processor saved in ``folder`` (returned)."""
    from modeling_rsfiqa.modeling_seagull import SeagullForRegionQuality
    from modeling_rsfiqa.processing_seagull import SeagullProcessor

    config = tiny_region_config(**overrides)
    folder = Path(folder)
    SeagullForRegionQuality(config).save_pretrained(folder)
    SeagullProcessor.from_model_config(config).save_pretrained(folder)
    return folder
