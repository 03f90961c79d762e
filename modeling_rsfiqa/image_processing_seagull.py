"""SEAGULL image preprocessing: resize to a square (no aspect keep), rescale, normalise (CLIP statistics).

The reference (``demo/seagull_inference.py``) resizes both the full image and each ROI's bounding-box crop
to 512x512 with bicubic resampling and CLIP's mean/std. Two transformers v5 backends, as for every HF image
processor: ``SeagullImageProcessor`` (torchvision) and ``SeagullImageProcessorPil`` (PIL/numpy).
"""

from __future__ import annotations

from transformers.image_processing_backends import PilBackend, TorchvisionBackend
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

__all__ = ["SeagullImageProcessor", "SeagullImageProcessorPil"]


class _SeagullDefaults:
    """Defaults shared by both backends (set per model by ``SeagullProcessor.from_model_config``)."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 512, "width": 512}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


class SeagullImageProcessor(_SeagullDefaults, TorchvisionBackend):
    """Torchvision backend."""


class SeagullImageProcessorPil(_SeagullDefaults, PilBackend):
    """PIL / numpy backend."""
