"""Backbone preprocessing for RSFIQA: resize to ``image_size`` (no aspect keep), rescale, normalise.

Two transformers v5 backends, as for every HF image processor: ``RSFIQAImageProcessor`` (torchvision)
and ``RSFIQAImageProcessorPil`` (PIL/numpy). Bilinear resampling with antialiasing: IQA measures
blur and noise, so the resize itself should add as little of either as possible.
"""

from __future__ import annotations

from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

__all__ = ["RSFIQAImageProcessor", "RSFIQAImageProcessorPil"]


class _RSFIQADefaults:
    """Defaults shared by both backends (overridden per model by ``RSFIQAProcessor.from_model_config``)."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 384, "width": 384}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


class RSFIQAImageProcessor(_RSFIQADefaults, TorchvisionBackend):
    """Torchvision backend."""


class RSFIQAImageProcessorPil(_RSFIQADefaults, PilBackend):
    """PIL / numpy backend."""
