"""``pipeline("video-quality")``: video(s) -> quality score, per-frame scores and their timestamps (Q-CLIP)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .video_io import VideoLoadError

__all__ = ["VideoQualityPipeline"]


def _is_frame(x: Any) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image) or (isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim in (2, 3))


class VideoQualityPipeline(Pipeline):
    """No-reference video quality with Q-CLIP (any saved :class:`QCLIPForVideoQualityScoring` folder).

    Call with a video file path (mp4, webm, mkv, mov, avi, gif, ...), a folder of frames, a list of frames (one
    video), a ``(T, C, H, W)`` tensor / ``(T, H, W, C)`` array, or a list of videos. Per video::

        {"score": float,            # on model.config.score_range (0..100 by default), higher is better,
                                    # clipped to the range
         "frame_scores": [...],     # each sampled frame's quality on the same scale (not clipped)
         "frame_times": [...],      # seconds of each sampled frame (None when unknown: frames without fps)
         "source": str}

    Keyword arguments: ``num_frames``, ``frame_sampling`` ("uniform" / "framediff"), ``input_fps`` (for frames
    in memory), ``skip_errors=True`` (a video that cannot be read gives ``{"score": None, "error": ...,
    "source": ...}`` instead of raising, so one bad file in a list loses nothing else).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __call__(self, inputs: Any = None, **kwargs: Any):
        # a list of frames is ONE video, not a batch of one-frame videos
        if isinstance(inputs, (list, tuple)) and inputs and all(_is_frame(x) for x in inputs):
            return super().__call__([list(inputs)], **kwargs)[0]
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        skip_errors: bool | None = None,
        num_frames: int | None = None,
        frame_sampling: str | None = None,
        input_fps: float | None = None,
        **kwargs: Any,
    ):
        preprocess: dict[str, Any] = {}
        if skip_errors is not None:
            preprocess["skip_errors"] = skip_errors
        video_kwargs = {"num_frames": num_frames, "frame_sampling": frame_sampling, "input_fps": input_fps}
        video_kwargs = {k: v for k, v in video_kwargs.items() if v is not None}
        if video_kwargs:
            preprocess["video_kwargs"] = video_kwargs
        return preprocess, {}, {}

    def preprocess(self, video: Any, skip_errors: bool = False, video_kwargs: dict | None = None) -> dict:
        source = os.fspath(video) if isinstance(video, (str, os.PathLike)) else f"<{type(video).__name__}>"
        try:
            inputs = self.processor(videos=video, return_metadata=True, **(video_kwargs or {}))
        except VideoLoadError as err:
            if skip_errors:
                return {"_error": str(err), "_source": source}
            raise
        meta = inputs["video_metadata"][0]
        return {
            "pixel_values_videos": inputs["pixel_values_videos"],
            "_meta": {
                "source": meta.source or source,
                "times": inputs["frame_timestamps"][0].tolist(),
            },
        }

    def _forward(self, model_inputs: dict) -> dict:
        if "_error" in model_inputs:
            return model_inputs
        meta = model_inputs.pop("_meta")
        pixels = model_inputs["pixel_values_videos"].to(self.device)
        outputs = self.model(pixel_values_videos=pixels)
        return {
            "score": outputs.score.float().cpu(),
            "frame_scores": outputs.frame_scores.float().cpu(),
            "_meta": meta,
        }

    def postprocess(self, model_outputs: dict) -> dict:
        if "_error" in model_outputs:
            return {"score": None, "error": model_outputs["_error"], "source": model_outputs["_source"]}
        low, high = (float(v) for v in self.model.config.score_range)
        meta = model_outputs["_meta"]
        return {
            "score": float(min(max(float(model_outputs["score"][0]), low), high)),
            "frame_scores": [float(s) for s in model_outputs["frame_scores"][0]],
            "frame_times": [None if math.isnan(t) else float(t) for t in meta["times"]],
            "source": meta["source"],
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save model, config (with the custom pipeline) and the full processor (video processor + tokenizer)."""
        super().save_pretrained(save_directory, **kwargs)
        if self.processor is not None:
            self.processor.save_pretrained(save_directory)
        config_path = os.path.join(save_directory, "config.json")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        for info in (config.get("custom_pipelines") or {}).values():
            info.pop("default", None)
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
