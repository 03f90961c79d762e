"""The web app (``rsfiqa serve``, and ``app.py`` as a Hugging Face Space): image, region and video quality.

:func:`load_pipelines` loads the models once, at start; :func:`build_app` turns them into a Gradio
``Blocks`` app with three tabs and three named API endpoints, usable from scripts through ``gradio_client``:

=================  =====================================================  ==========================
endpoint           inputs                                                 pipeline
=================  =====================================================  ==========================
``/score_image``   an image file                                          ``image-quality`` (RSFIQA)
``/score_regions`` an image file, the ROIs as a JSON list of boxes         ``region-quality`` (SEAGULL)
``/score_video``   a video file                                           ``video-quality`` (Q-CLIP)
=================  =====================================================  ==========================

Each returns JSON with the numbers. Serving on a small machine: every model call goes through one Gradio
queue whose concurrency limit (default 1: one job at a time, on all the torch threads) is shared by all
events that run a model, a bounded queue, per-kind upload limits with their own messages, and a lock per
pipeline. A file that cannot be read gives a readable message in the page (a ``gr.Error``), never a stack
trace; unexpected failures are logged in full on the server and reported briefly to the page.

Pure functions (:class:`QualityService`) do the work and raise :class:`InputError`; only :func:`build_app`
needs Gradio (the ``app`` extra).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .image_io import ImageLoadError, load_image_rgb
from .report import attention_overlay, colormap, quality_overlay

__all__ = [
    "AppPipelines",
    "ServeLimits",
    "InputError",
    "QualityService",
    "parse_rois",
    "load_pipelines",
    "build_app",
    "launch_app",
    "require_gradio",
    "IMAGE_TASK",
    "REGION_TASK",
    "VIDEO_TASK",
]

logger = logging.getLogger(__name__)

IMAGE_TASK, REGION_TASK, VIDEO_TASK = "image-quality", "region-quality", "video-quality"
TASK_TITLES = {
    IMAGE_TASK: "Image quality (RSFIQA)",
    REGION_TASK: "Region quality (SEAGULL)",
    VIDEO_TASK: "Video quality (Q-CLIP)",
}
DISTORTIONS = ("blur", "colorfulness", "compression", "contrast", "exposure", "noise")
VIDEO_FILE_TYPES = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".gif"]
DISPLAY_SIDE = 640  # longest side of the pictures the page shows
MB = 1 << 20


class InputError(ValueError):
    """Something wrong with what the user sent; the message is shown as is (it names the file)."""


@dataclass
class ServeLimits:
    """How much the server accepts and runs at once (defaults sized for a 2-core machine)."""

    concurrency: int = 1  # model calls running at once (each already uses all torch threads)
    max_queue: int = 64  # requests waiting; more are refused with "queue is full"
    image_max_mb: float = 50.0
    video_max_mb: float = 1024.0
    max_images: int = 32  # images per request in the Image tab
    max_rois: int = 32

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_queue < 1 or self.max_images < 1 or self.max_rois < 1:
            raise ValueError("concurrency, max_queue, max_images and max_rois must be >= 1")
        if self.image_max_mb <= 0 or self.video_max_mb <= 0:
            raise ValueError("upload limits must be positive")


@dataclass
class AppPipelines:
    """The loaded pipelines; ``None`` for a task this installation cannot serve (reason in ``unavailable``)."""

    image: Any
    regions: Any | None = None
    video: Any | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for task in (IMAGE_TASK, REGION_TASK, VIDEO_TASK):
            self.locks.setdefault(task, threading.Lock())
        if self.regions is None:
            self.unavailable.setdefault(REGION_TASK, "no region-quality pipeline was loaded")
        if self.video is None:
            self.unavailable.setdefault(VIDEO_TASK, "no video-quality pipeline was loaded")


def _registered_tasks() -> set[str]:
    from transformers.pipelines import PIPELINE_REGISTRY  # the package's __init__ registered its tasks

    return set(PIPELINE_REGISTRY.get_supported_tasks())


def _task_default(task: str) -> Any:
    from transformers.pipelines import PIPELINE_REGISTRY

    return PIPELINE_REGISTRY.check_task(task)[1].get("default")


def load_pipelines(
    model: str | None = None,
    region_model: str | None = None,
    video_model: str | None = None,
    threads: int | None = None,
    warmup: bool = True,
) -> AppPipelines:
    """Load every pipeline the app serves, once. ``None`` models mean the shipped defaults.

    The image pipeline is required; the region and video pipelines are loaded when their tasks are
    registered in this installation, and a failure to load one is recorded (the page shows why) instead of
    stopping the server. Turns on the CPU allocator tuning (:func:`runtime.tune_cpu_allocator`) and runs
    one tiny warm-up call so that the first user does not pay for lazy initialisation.
    """
    import torch
    from transformers import pipeline

    from .cli_score import load_pipeline
    from .runtime import tune_cpu_allocator

    tune_cpu_allocator()
    if threads:
        torch.set_num_threads(threads)
    image_pipe = load_pipeline(model, tune_allocator=True)  # the server owns its process
    if warmup:
        image_pipe(Image.new("RGB", (64, 48), (128, 128, 128)))
    loaded = AppPipelines(image=image_pipe)
    tasks = _registered_tasks()
    for task, name, attr in ((REGION_TASK, region_model, "regions"), (VIDEO_TASK, video_model, "video")):
        if task not in tasks:
            loaded.unavailable[task] = f"the `{task}` pipeline is not part of this installation of rsfiqa"
            continue
        if not name and not _task_default(task):
            flag = "--region-model" if task == REGION_TASK else "--video-model"
            loaded.unavailable[task] = (
                f"no default `{task}` model ships with this installation yet; start the server with "
                f"`{flag} DIR` (a saved model folder)"
            )
            continue
        try:
            setattr(loaded, attr, pipeline(task, model=name) if name else pipeline(task))
            loaded.unavailable.pop(task, None)
        except Exception as err:  # a missing or broken model must not stop the image tab
            logger.exception("could not load the %s pipeline", task)
            loaded.unavailable[task] = f"its model could not be loaded ({type(err).__name__}: {err})"
    return loaded


# --------------------------------------------------------------------------------------------------------
# the work, without Gradio


def _model_name(name_or_path: str) -> str:
    from . import DEFAULT_MODEL_DIR

    if not name_or_path:
        return "rsfiqa"
    path = Path(str(name_or_path))
    if path.exists() and path.resolve() == DEFAULT_MODEL_DIR:
        return "rsfiqa-mobile"  # the shipped default model (see its model card)
    return path.name if path.exists() else str(name_or_path)


def _display_name(path: str | os.PathLike) -> str:
    return Path(path).name


def _check_size(path: str, name: str, limit_mb: float, kind: str) -> None:
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise InputError(f"{name}: the upload could not be read ({err.strerror or err})") from None
    if size == 0:
        raise InputError(f"{name} is empty (0 bytes)")
    if size > limit_mb * MB:
        raise InputError(
            f"{name} is {size / MB:.1f} MB: {kind} files up to {limit_mb:g} MB are accepted by this server"
        )


def _size_text(mb: float) -> str:
    return f"{mb / 1024:g} GB" if mb >= 1024 else f"{mb:g} MB"


def _round(value: float, digits: int = 3) -> float:
    return float(round(float(value), digits))


def _worst_first(regions: list[dict], higher_is_better: bool) -> list[dict]:
    return sorted(regions, key=lambda r: r["score"] if higher_is_better else -r["score"])


def parse_rois(rois: Any, size: tuple[int, int], max_rois: int = 32) -> list[Any]:
    """Validate ROIs for ``pipeline("region-quality")`` against the image ``size`` (width, height).

    Accepts a JSON string or a list of: ``[x0, y0, x1, y1]`` boxes (clipped to the image, corners in any
    order), ``{"points": [[x, y], ...]}``, COCO RLE dicts ``{"size": [h, w], "counts": ...}`` and boolean
    masks; a single box or dict alone is taken as a list of one. Raises :class:`InputError` naming the
    region (1-based) and what is wrong with it.
    """
    if isinstance(rois, str):
        text = rois.strip()
        if not text:
            raise InputError("no regions given: add boxes, points or masks")
        try:
            rois = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"the regions are not valid JSON ({err.msg} at character {err.pos})") from None
    if isinstance(rois, dict) or (
        isinstance(rois, list) and len(rois) == 4 and all(isinstance(v, (int, float)) for v in rois)
    ):
        rois = [rois]
    if not isinstance(rois, list) or not rois:
        raise InputError("the regions must be a non-empty JSON list, e.g. [[10, 20, 200, 180]]")
    if len(rois) > max_rois:
        raise InputError(f"{len(rois)} regions: this server scores up to {max_rois} per image")
    width, height = size
    parsed: list[Any] = []
    for i, roi in enumerate(rois, 1):
        if isinstance(roi, np.ndarray):
            if roi.shape != (height, width):
                raise InputError(
                    f"region {i}: the mask is {roi.shape[1]}x{roi.shape[0]}, the image {width}x{height}"
                )
            if not roi.any():
                raise InputError(f"region {i}: the mask is empty")
            parsed.append(roi.astype(bool))
        elif isinstance(roi, (list, tuple)):
            if len(roi) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in roi):
                raise InputError(f"region {i}: a box is four numbers [x0, y0, x1, y1], got {roi!r}")
            x0, y0, x1, y1 = (float(v) for v in roi)
            x0, x1 = max(0.0, min(x0, x1)), min(float(width), max(x0, x1))
            y0, y1 = max(0.0, min(y0, y1)), min(float(height), max(y0, y1))
            if x1 - x0 < 1 or y1 - y0 < 1:
                raise InputError(
                    f"region {i}: the box {list(roi)} has no area inside the {width}x{height} image"
                )
            parsed.append([round(x0), round(y0), round(x1), round(y1)])
        elif isinstance(roi, dict) and "points" in roi:
            points = roi["points"]
            ok = (
                isinstance(points, list)
                and points
                and all(
                    isinstance(p, (list, tuple))
                    and len(p) == 2
                    and all(isinstance(c, (int, float)) for c in p)
                    for p in points
                )
            )
            if not ok:
                raise InputError(f"region {i}: points are a list of [x, y] pairs, got {points!r}")
            if any(not (0 <= p[0] < width and 0 <= p[1] < height) for p in points):
                raise InputError(f"region {i}: a point lies outside the {width}x{height} image")
            parsed.append({**roi, "points": [[float(p[0]), float(p[1])] for p in points]})
        elif isinstance(roi, dict) and "counts" in roi and "size" in roi:
            if [int(v) for v in roi["size"]] != [height, width]:
                raise InputError(
                    f"region {i}: the RLE mask is for size {roi['size']}, the image is {height}x{width} (h, w)"
                )
            parsed.append(roi)
        else:
            raise InputError(
                f'region {i}: expected a box [x0, y0, x1, y1], {{"points": [[x, y], ...]}} or an RLE mask, '
                f"got {roi!r}"
            )
    return parsed


class QualityService:
    """Scoring for the app and its API: decode, check limits, call the pipelines, shape the answers."""

    def __init__(self, pipelines: AppPipelines, limits: ServeLimits | None = None):
        self.pipelines = pipelines
        self.limits = limits or ServeLimits()
        config = pipelines.image.model.config
        self.score_range = tuple(float(v) for v in config.score_range)
        self.higher_is_better = bool(config.higher_is_better)
        self.model_name = _model_name(getattr(config, "_name_or_path", ""))
        # CSV exports: one folder for the service's lifetime (removed at exit), old files pruned as we go
        self._exports = tempfile.TemporaryDirectory(prefix="rsfiqa-app-")

    # ---- images
    def load_image(self, path: str, name: str | None = None) -> Image.Image:
        """Decode an uploaded image, or raise :class:`InputError` naming it (never a traceback)."""
        name = name or _display_name(path)
        _check_size(path, name, self.limits.image_max_mb, "image")
        try:
            return load_image_rgb(path)
        except ImageLoadError as err:
            reason = err.reason.replace(str(path), name)
            raise InputError(f"{name} could not be read as an image: {reason}") from None
        except Image.DecompressionBombError as err:
            raise InputError(f"{name} is too large to decode safely: {err}") from None
        except Exception as err:  # any other decoder failure is still the file's fault
            raise InputError(f"{name} could not be read as an image ({type(err).__name__})") from None

    def score_image(self, path: str, name: str | None = None) -> tuple[Image.Image, dict[str, Any]]:
        """(decoded image, pipeline result with ``region_map``); the result's ``source`` is the file name."""
        name = name or _display_name(path)
        image = self.load_image(path, name)
        with self.pipelines.locks[IMAGE_TASK]:
            result = self.pipelines.image(image, return_region_map=True)
        result["source"] = name
        return image, result

    def image_json(self, result: dict[str, Any]) -> dict[str, Any]:
        """The numbers of one image result, JSON-ready (what ``/score_image`` returns)."""
        regions = [
            {
                "label": int(r["label"]),
                "box": [int(v) for v in r["box"]],
                "area": _round(r["area"], 5),
                "centroid": [_round(v, 2) for v in r["centroid"]],
                "score": _round(r["score"]),
                "importance": _round(r["importance"], 5),
            }
            for r in result["regions"]
        ]
        worst = _worst_first(regions, self.higher_is_better)
        return {
            "source": result["source"],
            "score": _round(result["score"]),
            "score_range": list(self.score_range),
            "higher_is_better": self.higher_is_better,
            "size": [int(v) for v in result["size"]],
            "model": self.model_name,
            "worst_region": worst[0] if worst else None,
            "regions": regions,
            "attention_map": np.round(np.asarray(result["attention_map"], dtype=np.float64), 4).tolist(),
        }

    def score_image_json(self, path: str) -> dict[str, Any]:
        return self.image_json(self.score_image(path)[1])

    def image_views(self, image: Image.Image, result: dict[str, Any]) -> dict[str, Any]:
        """What the Image tab shows for one image: overlays, worst-region rows, a one-line summary."""
        quality = quality_overlay(image, result, self.score_range, DISPLAY_SIDE, self.higher_is_better)
        attention = attention_overlay(image, result, DISPLAY_SIDE)
        worst = _worst_first(result["regions"], self.higher_is_better)[:5]
        rows = [
            [
                i + 1,
                ", ".join(str(int(v)) for v in r["box"]),
                _round(100 * r["area"], 1),
                _round(r["score"], 2),
                _round(100 * r["importance"], 1),
            ]
            for i, r in enumerate(worst)
        ]
        return {
            "name": result["source"],
            "score": float(result["score"]),
            "size": tuple(int(v) for v in result["size"]),
            "regions": len(result["regions"]),
            "worst": worst[0] if worst else None,
            "quality": quality,
            "attention": attention,
            "worst_rows": rows,
        }

    def describe_scale(self) -> str:
        lo, hi = self.score_range
        return f"on {lo:g}–{hi:g}, {'higher' if self.higher_is_better else 'lower'} is better"

    def score_images(self, paths: Sequence[str]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """Score several uploads; unreadable ones are reported (name, error) and the others kept."""
        if len(paths) > self.limits.max_images:
            raise InputError(
                f"{len(paths)} images at once: this server scores up to {self.limits.max_images} per request "
                "(for whole folders, use `rsfiqa score FOLDER --report DIR`)"
            )
        views, errors = [], []
        for path in paths:
            name = _display_name(path)
            try:
                image, result = self.score_image(path, name)
            except InputError as err:
                errors.append({"name": name, "error": str(err)})
                continue
            views.append(self.image_views(image, result))
        return views, errors

    def table_rows(self, views: list[dict], errors: list[dict]) -> tuple[list[str], list[list[Any]]]:
        headers = ["file", "score", "worst region score", "worst region box", "regions", "width", "height"]
        headers.append("error")
        rows = []
        for v in views:
            worst = v["worst"]
            rows.append(
                [
                    v["name"],
                    _round(v["score"], 2),
                    _round(worst["score"], 2) if worst else None,
                    ", ".join(str(int(c)) for c in worst["box"]) if worst else "",
                    v["regions"],
                    v["size"][0],
                    v["size"][1],
                    "",
                ]
            )
        rows += [[e["name"], None, None, "", None, None, None, e["error"]] for e in errors]
        return headers, rows

    def write_csv(self, views: list[dict], errors: list[dict], max_age: float = 3600.0) -> str:
        """The batch table as ``rsfiqa-scores.csv`` in a fresh folder (Gradio serves a copy of it)."""
        headers, rows = self.table_rows(views, errors)
        root = Path(self._exports.name)
        for old in root.iterdir():
            if time.time() - old.stat().st_mtime > max_age:
                shutil.rmtree(old, ignore_errors=True)
        out = Path(tempfile.mkdtemp(dir=root)) / "rsfiqa-scores.csv"
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(headers)
            writer.writerows([["" if c is None else c for c in row] for row in rows])
        return str(out)

    def summary_markdown(self, views: list[dict], errors: list[dict]) -> str:
        if len(views) == 1 and not errors:
            v = views[0]
            lines = [
                f"## Score {v['score']:.1f}",
                f"**{html.escape(v['name'])}** ({v['size'][0]}×{v['size'][1]}): predicted quality "
                f"{self.describe_scale()}; {v['regions']} regions.",
            ]
            if v["worst"]:
                w = v["worst"]
                lines.append(
                    f"Worst region: {w['score']:.1f} at box [{', '.join(str(int(c)) for c in w['box'])}] "
                    f"({100 * w['area']:.0f}% of the image)."
                )
            return "\n\n".join(lines)
        lines = []
        if views:
            scores = [v["score"] for v in views]
            order = sorted(views, key=lambda v: v["score"], reverse=self.higher_is_better)
            lines.append(f"## {len(views)} images scored: mean score {float(np.mean(scores)):.1f}")
            lines.append(
                f"Best **{html.escape(order[0]['name'])}** ({order[0]['score']:.1f}), worst "
                f"**{html.escape(order[-1]['name'])}** ({order[-1]['score']:.1f}); {self.describe_scale()}."
            )
        if errors:
            lines.append(f"**{len(errors)} file(s) could not be scored:**")
            lines += [f"- {html.escape(e['error'])}" for e in errors]
        return "\n\n".join(lines)

    # ---- regions
    def parse_rois(self, rois: Any, size: tuple[int, int]) -> list[Any]:
        return parse_rois(rois, size, self.limits.max_rois)

    def load_mask(self, path: str, size: tuple[int, int]) -> np.ndarray:
        """A mask image (white = inside) as a boolean array of the image's size."""
        name = _display_name(path)
        mask = self.load_image(path, name)
        if mask.size != tuple(size):
            raise InputError(
                f"mask {name} is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}"
            )
        return np.asarray(mask.convert("L")) > 127

    def _regions_pipe(self) -> Any:
        if self.pipelines.regions is None:
            raise InputError(
                f"Region quality is not available on this server: {self.pipelines.unavailable.get(REGION_TASK)}"
            )
        return self.pipelines.regions

    def score_regions(self, path: str, rois: Any) -> tuple[Image.Image, list[Any], list[dict[str, Any]]]:
        pipe = self._regions_pipe()
        image = self.load_image(path)
        parsed = self.parse_rois(rois, image.size)
        with self.pipelines.locks[REGION_TASK]:
            results = pipe(image, regions=parsed, skip_errors=True)
        if isinstance(results, dict):
            results = [results]
        return image, parsed, list(results)

    @staticmethod
    def region_json(results: list[dict[str, Any]], source: str) -> dict[str, Any]:
        out = []
        for r in results:
            if "error" in r:
                out.append({"error": str(r["error"])})
                continue
            item = {
                "quality": _round(r["quality"]),
                "importance": _round(r["importance"]),
                "distortions": {k: _round(v, 4) for k, v in r["distortions"].items()},
                "box": [_round(v, 1) for v in r["box"]],
                "area": _round(r["area"], 5),
            }
            if r.get("answer") is not None:
                item["answer"] = str(r["answer"])
            out.append(item)
        return {"source": source, "regions": out}

    def score_regions_json(self, path: str, rois: Any) -> dict[str, Any]:
        _, _, results = self.score_regions(path, rois)
        return self.region_json(results, _display_name(path))

    # ---- video
    def _video_pipe(self) -> Any:
        if self.pipelines.video is None:
            raise InputError(
                f"Video quality is not available on this server: {self.pipelines.unavailable.get(VIDEO_TASK)}"
            )
        return self.pipelines.video

    def score_video(self, path: str) -> dict[str, Any]:
        """The numbers of one video (what ``/score_video`` returns); ``frame_times`` in seconds."""
        from .video_io import VideoLoadError

        pipe = self._video_pipe()
        name = _display_name(path)
        _check_size(path, name, self.limits.video_max_mb, "video")
        try:
            with self.pipelines.locks[VIDEO_TASK]:
                result = pipe(path)
        except VideoLoadError as err:
            raise InputError(f"{name} could not be read as a video: {err.reason}") from None
        config = pipe.model.config
        return {
            "source": name,
            "score": _round(result["score"]),
            "score_range": [float(v) for v in getattr(config, "score_range", (0.0, 100.0))],
            "frame_scores": [_round(v) for v in result["frame_scores"]],
            "frame_times": [None if t is None else _round(t, 3) for t in result["frame_times"]],
            "model": _model_name(getattr(config, "_name_or_path", "")),
        }


# --------------------------------------------------------------------------------------------------------
# pictures for the Regions and Video tabs


def _quality_colour(quality: float) -> tuple[int, int, int]:
    rgb = colormap(np.array([np.clip(quality / 100.0, 0.0, 1.0)]), "quality")[0]
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def draw_rois(
    image: Image.Image,
    rois: list[Any],
    results: list[dict[str, Any]] | None = None,
    max_side: int = DISPLAY_SIDE,
) -> tuple[Image.Image, float]:
    """The image (longest side ``max_side``) with ROIs drawn and numbered: boxes, points, mask outlines.

    With ``results`` each ROI is coloured by its quality (the report's red -> green ramp); returns the
    picture and the display scale (display pixels per image pixel).
    """
    scale = min(1.0, max_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    shown = image.convert("RGB").resize(size, Image.BILINEAR)
    canvas = np.asarray(shown).copy()
    draw_later = []
    for i, roi in enumerate(rois):
        result = results[i] if results and i < len(results) else None
        colour = _quality_colour(result["quality"]) if result and "quality" in result else (40, 160, 255)
        if isinstance(roi, np.ndarray):
            small = np.asarray(Image.fromarray(roi.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0
            edge = small & ~(
                np.pad(small, 1)[:-2, 1:-1]
                & np.pad(small, 1)[2:, 1:-1]
                & np.pad(small, 1)[1:-1, :-2]
                & np.pad(small, 1)[1:-1, 2:]
            )
            canvas[small] = (0.7 * canvas[small] + 0.3 * np.array(colour)).astype(np.uint8)
            canvas[edge] = colour
        draw_later.append((roi, result, colour))
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for i, (roi, result, colour) in enumerate(draw_later, 1):
        anchor = None
        if isinstance(roi, dict) and "points" in roi:
            for x, y in roi["points"]:
                cx, cy = x * scale, y * scale
                draw.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=colour, outline=(255, 255, 255), width=2)
                anchor = anchor or (cx + 6, cy - 6)
        box = result.get("box") if result and "box" in result else (roi if isinstance(roi, list) else None)
        if box is not None:
            x0, y0, x1, y1 = (float(v) * scale for v in box)
            draw.rectangle([x0, y0, x1, y1], outline=colour, width=3)
            anchor = (x0 + 3, y0 + 2)
        if anchor is None and isinstance(roi, np.ndarray):
            ys, xs = np.nonzero(roi)
            anchor = (xs.min() * scale + 3, ys.min() * scale + 2)
        if anchor is not None:
            label = f"{i}" if not result or "quality" not in result else f"{i}: {result['quality']:.0f}"
            x, y = anchor
            draw.rectangle([x, y, x + 7 * len(label) + 4, y + 13], fill=(0, 0, 0))
            draw.text((x + 2, y + 1), label, fill=(255, 255, 255))
    return picture, scale


def severity_bars_html(results: list[dict[str, Any]]) -> str:
    """One card per ROI: quality, importance and a bar per distortion severity (0..1)."""
    cards = []
    for i, r in enumerate(results, 1):
        if "error" in r:
            cards.append(
                f"<div class='rsfiqa-roi'><b>Region {i}</b>: could not be scored: {html.escape(str(r['error']))}</div>"
            )
            continue
        bars = []
        for name in DISTORTIONS + tuple(k for k in r["distortions"] if k not in DISTORTIONS):
            if name not in r["distortions"]:
                continue
            value = float(np.clip(r["distortions"][name], 0.0, 1.0))
            red, green, blue = _quality_colour(100 * (1 - value))
            bars.append(
                f"<div class='rsfiqa-bar'><span class='rsfiqa-bar-name'>{html.escape(name)}</span>"
                f"<span class='rsfiqa-bar-track'><span class='rsfiqa-bar-fill' style='width:{100 * value:.0f}%;"
                f"background:rgb({red},{green},{blue})'></span></span>"
                f"<span class='rsfiqa-bar-value'>{value:.2f}</span></div>"
            )
        answer = f"<p class='rsfiqa-answer'>{html.escape(str(r['answer']))}</p>" if r.get("answer") else ""
        cards.append(
            f"<div class='rsfiqa-roi'><b>Region {i}</b>: quality <b>{float(r['quality']):.1f}</b>, importance "
            f"{float(r['importance']):.1f} <span class='rsfiqa-dim'>(0–100)</span>{''.join(bars)}{answer}</div>"
        )
    return "<div class='rsfiqa-rois'>" + "".join(cards) + "</div>"


def sample_frames(
    path: str, times: Sequence[float | None], max_frames: int = 12, max_side: int = 240
) -> list[tuple[Image.Image, int]]:
    """(thumbnail, position in ``times``) for up to ``max_frames`` of the scored frames, evenly spread.

    Each time is matched to the nearest frame timestamp of the file and only those frames are decoded
    (:class:`video_io.VideoReader` seeks). Times that are unknown (None) are skipped.
    """
    from .video_io import VideoReader

    known = [i for i, t in enumerate(times) if t is not None]
    if not known:
        return []
    chosen = known[:: max(1, math.ceil(len(known) / max_frames))]
    with VideoReader(path) as reader:
        stamps = np.asarray(reader.times, dtype=np.float64)
        frame_ids = [int(np.argmin(np.abs(stamps - float(times[i])))) for i in chosen]
        scale = min(1.0, max_side / max(reader.width, reader.height, 1))
        size = (max(1, round(reader.width * scale)), max(1, round(reader.height * scale)))
        frames = reader.get_frames(frame_ids, size=size if scale < 1.0 else None)
    return [(Image.fromarray(frame), i) for frame, i in zip(frames, chosen)]


# --------------------------------------------------------------------------------------------------------
# the Gradio app


def require_gradio():
    """Import Gradio, or explain how to install it."""
    try:
        import gradio as gr
    except ModuleNotFoundError as err:
        if err.name != "gradio":
            raise
        raise ModuleNotFoundError(
            "The rsfiqa web app needs Gradio: pip install 'rsfiqa[app]'", name="gradio"
        ) from None
    return gr


_CSS = """
.rsfiqa-rois{display:flex;flex-wrap:wrap;gap:10px}
.rsfiqa-roi{border:1px solid var(--border-color-primary);border-radius:8px;padding:8px 10px;min-width:260px}
.rsfiqa-bar{display:flex;align-items:center;gap:6px;font-size:13px;margin-top:3px}
.rsfiqa-bar-name{width:90px}
.rsfiqa-bar-track{flex:1;height:10px;background:var(--neutral-200);border-radius:5px;overflow:hidden}
.rsfiqa-bar-fill{display:block;height:100%}
.rsfiqa-bar-value{width:36px;text-align:right;font-variant-numeric:tabular-nums}
.rsfiqa-dim{color:var(--body-text-color-subdued);font-size:12px}
"""


def _could_not_score(messages: list[str]) -> str:
    return "### Could not score\n\n" + "\n\n".join(f"- {html.escape(m)}" for m in messages)


def _notice(task: str, pipelines: AppPipelines) -> str:
    return (
        f"**{TASK_TITLES[task]} is not available on this server:** {pipelines.unavailable.get(task, '')}. "
        "The Image tab works meanwhile."
    )


def build_app(
    pipelines: AppPipelines,
    limits: ServeLimits | None = None,
    title: str = "rsfiqa: where is quality lost?",
):
    """The Gradio ``Blocks`` app for loaded ``pipelines`` (see the module docstring). Queue configured."""
    gr = require_gradio()
    limits = limits or ServeLimits()
    service = QualityService(pipelines, limits)
    run = {"concurrency_id": "model", "concurrency_limit": limits.concurrency}

    def user_error(err: Exception) -> Exception:
        """InputError -> its message; anything else is logged in full and reported in one line."""
        if isinstance(err, InputError):
            return gr.Error(str(err), title="Cannot score this file", print_exception=False)
        logger.exception("unexpected error while scoring")
        return gr.Error(f"Scoring failed ({type(err).__name__}: {err}). The server log has the details.")

    # ---- Image tab handlers
    def on_images(paths):
        def nothing(summary: str = ""):
            return (
                summary,
                None,
                None,
                gr.update(value=None, visible=False),
                gr.update(choices=[], value=None, visible=False),
                gr.update(value=None, visible=False),
                gr.update(value=None, visible=False),
                None,
            )

        if not paths:
            return nothing()
        paths = [paths] if isinstance(paths, str) else list(paths)
        try:
            views, errors = service.score_images(paths)
        except InputError as err:
            errors, views = [{"name": "", "error": str(err)}], []
        except Exception as err:
            raise user_error(err) from None
        if not views:  # said in the page (it stays) and in a toast
            messages = [e["error"] for e in errors]
            gr.Warning(" ".join(messages), title="Cannot score", duration=15)
            return nothing(_could_not_score(messages))
        if errors:
            gr.Warning(f"{len(errors)} of {len(paths)} files could not be scored; see the table.")
        several = len(views) + len(errors) > 1
        labels = [f"{i + 1}. {v['name']}" for i, v in enumerate(views)]
        first = views[0]
        headers, rows = service.table_rows(views, errors)
        table = gr.update(value={"headers": headers, "data": rows}, visible=several)
        csv_file = gr.update(value=service.write_csv(views, errors) if several else None, visible=several)
        state = [{k: v[k] for k in ("name", "quality", "attention", "worst_rows")} for v in views]
        return (
            service.summary_markdown(views, errors),
            first["quality"],
            first["attention"],
            gr.update(value=first["worst_rows"], visible=True),
            gr.update(choices=labels, value=labels[0], visible=several),
            table,
            csv_file,
            state,
        )

    def on_pick(label, state):
        if not state or not label:
            return gr.skip(), gr.skip(), gr.skip()
        index = int(label.split(".", 1)[0]) - 1
        view = state[min(max(index, 0), len(state) - 1)]
        return view["quality"], view["attention"], view["worst_rows"]

    def api_score_image(path):
        """Score one image: JSON with the score, the regions (box, area, score, importance) and the RSA map."""
        if not path:
            raise gr.Error("no image was sent", print_exception=False)
        try:
            return service.score_image_json(path)
        except Exception as err:
            raise user_error(err) from None

    # ---- Regions tab handlers
    def on_roi_image(path):
        if not path:
            return None, None, "", gr.skip()
        try:
            image = service.load_image(path)
        except Exception as err:
            raise user_error(err) from None
        picture, scale = draw_rois(image, [])
        return picture, {"path": path, "size": list(image.size), "scale": scale, "corner": None}, "[]", []

    def on_roi_click(state, mode, rois_text, evt: gr.SelectData):
        if not state:
            raise gr.Error("upload an image first", print_exception=False)
        x, y = (float(c) / state["scale"] for c in evt.index[:2])
        try:
            rois = json.loads(rois_text or "[]")
        except json.JSONDecodeError:
            rois = []
        if mode.startswith("Point"):
            rois.append({"points": [[round(x), round(y)]]})
            state = {**state, "corner": None}
        elif state.get("corner") is None:
            state = {**state, "corner": [round(x), round(y)]}
        else:
            (x0, y0), state = state["corner"], {**state, "corner": None}
            rois.append([min(x0, round(x)), min(y0, round(y)), max(x0, round(x)), max(y0, round(y))])
        return json.dumps(rois), state

    # Gradio finds the event-data argument by its type; `from __future__ import annotations` makes the hint
    # a string that cannot be resolved here (gr is local), so give it the class
    on_roi_click.__annotations__["evt"] = gr.SelectData

    def on_rois_changed(state, rois_text, masks):
        if not state:
            return None
        try:
            image = service.load_image(state["path"])
            rois = _collect_rois(service, state, rois_text, masks)
        except Exception as err:
            raise user_error(err) from None
        picture, _ = draw_rois(image, rois)
        if state.get("corner"):
            cx, cy = (c * state["scale"] for c in state["corner"])
            ImageDraw.Draw(picture).line(
                [cx - 8, cy, cx + 8, cy, cx, cy, cx, cy - 8, cx, cy + 8], fill=(255, 255, 0), width=2
            )
        return picture

    def on_score_regions(state, rois_text, masks):
        if not state:
            raise gr.Error("upload an image first", print_exception=False)
        try:
            rois = _collect_rois(service, state, rois_text, masks)
            image, parsed, results = service.score_regions(state["path"], rois)
        except Exception as err:
            raise user_error(err) from None
        picture, _ = draw_rois(image, parsed, results)
        rows = []
        for i, r in enumerate(results, 1):
            if "error" in r:
                rows.append([i, None, None, *([None] * len(DISTORTIONS)), str(r["error"])])
                continue
            dist = r["distortions"]
            rows.append(
                [i, _round(r["quality"], 1), _round(r["importance"], 1)]
                + [_round(dist.get(k, float("nan")), 2) for k in DISTORTIONS]
                + [""]
            )
        headers = ["region", "quality", "importance", *DISTORTIONS, "error"]
        return picture, severity_bars_html(results), {"headers": headers, "data": rows}

    def api_score_regions(path, rois):
        """Score ROIs of one image: ``rois`` is a JSON list of [x0, y0, x1, y1] boxes (or {"points": ...})."""
        if not path:
            raise gr.Error("no image was sent", print_exception=False)
        try:
            return service.score_regions_json(path, rois)
        except Exception as err:
            raise user_error(err) from None

    # ---- Video tab handlers
    def on_video(path):
        import pandas as pd

        # an empty table, not None: Gradio 6's plot keeps a resize observer on its chart element, and a
        # None value removes that element (a page error on the next layout change)
        no_plot = pd.DataFrame({"time (s)": [], "quality": []})
        if not path:
            return "", no_plot, gr.update(value=None, visible=False)
        try:
            numbers = service.score_video(path)
        except InputError as err:  # said in the page (it stays) and in a toast, like the Image tab
            gr.Warning(str(err), title="Cannot score", duration=15)
            return _could_not_score([str(err)]), no_plot, gr.update(value=None, visible=False)
        except Exception as err:
            raise user_error(err) from None

        times, scores = numbers["frame_times"], numbers["frame_scores"]
        if all(t is not None for t in times):
            plot = gr.LinePlot(
                pd.DataFrame({"time (s)": times, "quality": scores}), x="time (s)", y="quality"
            )
        else:
            frames = list(range(1, len(scores) + 1))
            plot = gr.LinePlot(pd.DataFrame({"sampled frame": frames, "quality": scores}), x="sampled frame")
        try:
            gallery = [(img, f"{times[i]:.2f} s: {scores[i]:.1f}") for img, i in sample_frames(path, times)]
        except Exception:  # the score stands even if the thumbnails cannot be decoded
            logger.exception("could not decode the sampled frames of %s", path)
            gallery = []
        lo, hi = numbers["score_range"]
        summary = (
            f"## Score {numbers['score']:.1f}\n\n**{html.escape(numbers['source'])}**: predicted quality on "
            f"{lo:g}–{hi:g} (higher is better) with {html.escape(numbers['model'])}, from {len(scores)} sampled "
            f"frames; lowest frame {min(scores, default=float('nan')):.1f}, highest "
            f"{max(scores, default=float('nan')):.1f}."
        )
        return summary, plot, gr.update(value=gallery or None, visible=bool(gallery))

    def api_score_video(path):
        """Score one video: JSON with the score, the per-frame scores and their times (seconds)."""
        if not path:
            raise gr.Error("no video was sent", print_exception=False)
        try:
            return service.score_video(path)
        except Exception as err:
            raise user_error(err) from None

    image_limit = _size_text(limits.image_max_mb)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"# {html.escape(title)}\n"
            f"Region-aware quality assessment with **{html.escape(service.model_name)}**. Scores are predicted "
            f"mean opinion scores {service.describe_scale()}. Nothing leaves this server."
        )
        with gr.Tabs():
            with gr.Tab("Image", id="image", elem_id="tab-image"):
                gr.Markdown(
                    f"Upload one or several images (up to {limits.max_images} at a time, {image_limit} each). "
                    "Left: predicted quality of each region (red = worse, green = better); right: the RSA "
                    "attention map (bright = weighs more in the score)."
                )
                with gr.Row():
                    with gr.Column(scale=1, min_width=280):
                        images_in = gr.File(
                            label="Images",
                            file_count="multiple",
                            file_types=["image"],
                            type="filepath",
                            elem_id="image-input",
                        )
                    with gr.Column(scale=2):
                        summary = gr.Markdown(elem_id="image-summary")
                        pick = gr.Dropdown(label="Show image", visible=False, elem_id="image-pick")
                with gr.Row():
                    quality_view = gr.Image(
                        label="Region quality (red = worse, green = better)",
                        type="pil",
                        format="png",
                        interactive=False,
                        elem_id="image-quality",
                    )
                    attention_view = gr.Image(
                        label="RSA attention (bright = weighs more)",
                        type="pil",
                        format="png",
                        interactive=False,
                        elem_id="image-attention",
                    )
                worst_table = gr.Dataframe(
                    headers=["rank", "box (x0, y0, x1, y1)", "area %", "score", "attention %"],
                    label="Worst regions",
                    interactive=False,
                    visible=False,
                    elem_id="image-worst",
                )
                batch_table = gr.Dataframe(
                    label="All images (sort from a column's ⋮ menu)",
                    interactive=False,
                    wrap=True,
                    column_widths=["15%", "8%", "10%", "15%", "8%", "7%", "7%", "30%"],
                    visible=False,
                    elem_id="image-table",
                )
                csv_out = gr.File(label="Scores as CSV", visible=False, elem_id="image-csv")
                image_state = gr.State()
            images_in.change(
                on_images,
                images_in,
                [summary, quality_view, attention_view, worst_table, pick, batch_table, csv_out, image_state],
                api_visibility="private",
                **run,
            )
            pick.change(
                on_pick,
                [pick, image_state],
                [quality_view, attention_view, worst_table],
                api_visibility="private",
                queue=False,
            )

            with gr.Tab("Regions", id="regions", elem_id="tab-regions"):
                if pipelines.regions is None:
                    gr.Markdown(_notice(REGION_TASK, pipelines), elem_id="regions-notice")
                else:
                    gr.Markdown(
                        "Upload an image, then mark regions of interest: in **Box** mode click two opposite "
                        "corners, in **Point** mode click inside an object (segmented with SAM where the model "
                        "has it), or upload masks (white = inside). The JSON list below can be edited too."
                    )
                    with gr.Row():
                        with gr.Column(scale=1, min_width=280):
                            roi_file = gr.File(
                                label="Image", file_types=["image"], type="filepath", elem_id="roi-input"
                            )
                            roi_mode = gr.Radio(
                                ["Box (click two corners)", "Point (click an object)"],
                                value="Box (click two corners)",
                                label="Click mode",
                                elem_id="roi-mode",
                            )
                            roi_text = gr.Textbox(
                                label='Regions (JSON: [x0, y0, x1, y1] boxes, {"points": [[x, y]]})',
                                lines=3,
                                elem_id="roi-json",
                            )
                            roi_masks = gr.File(
                                label="Masks (optional)",
                                file_count="multiple",
                                file_types=["image"],
                                type="filepath",
                                elem_id="roi-masks",
                            )
                            with gr.Row():
                                roi_clear = gr.Button("Clear regions")
                                roi_go = gr.Button("Score regions", variant="primary", elem_id="roi-score")
                        with gr.Column(scale=2):
                            roi_canvas = gr.Image(
                                label="Click on the image to add regions",
                                type="pil",
                                format="png",
                                interactive=False,
                                elem_id="roi-canvas",
                            )
                    roi_cards = gr.HTML(elem_id="roi-cards")
                    roi_table = gr.Dataframe(label="Regions", interactive=False, elem_id="roi-table")
                    roi_state = gr.State()
                    roi_file.change(
                        on_roi_image,
                        roi_file,
                        [roi_canvas, roi_state, roi_text, roi_masks],
                        api_visibility="private",
                    )
                    roi_canvas.select(
                        on_roi_click,
                        [roi_state, roi_mode, roi_text],
                        [roi_text, roi_state],
                        api_visibility="private",
                    )
                    gr.on(
                        [roi_text.change, roi_masks.change],
                        on_rois_changed,
                        [roi_state, roi_text, roi_masks],
                        roi_canvas,
                        api_visibility="private",
                    )
                    roi_clear.click(
                        lambda: ("[]", None), None, [roi_text, roi_masks], api_visibility="private"
                    )
                    roi_go.click(
                        on_score_regions,
                        [roi_state, roi_text, roi_masks],
                        [roi_canvas, roi_cards, roi_table],
                        api_visibility="private",
                        **run,
                    )

            with gr.Tab("Video", id="video", elem_id="tab-video"):
                if pipelines.video is None:
                    gr.Markdown(_notice(VIDEO_TASK, pipelines), elem_id="video-notice")
                else:
                    gr.Markdown(
                        f"Upload a video (up to {_size_text(limits.video_max_mb)}). The model scores sampled frames; "
                        "the plot shows the quality over time."
                    )
                    with gr.Row():
                        with gr.Column(scale=1, min_width=280):
                            video_in = gr.File(
                                label="Video",
                                file_types=VIDEO_FILE_TYPES,
                                type="filepath",
                                elem_id="video-input",
                            )
                        with gr.Column(scale=2):
                            video_summary = gr.Markdown(elem_id="video-summary")
                    video_plot = gr.LinePlot(
                        x="time (s)",
                        y="quality",
                        y_lim=[0, 100],
                        label="Quality per sampled frame",
                        elem_id="video-plot",
                    )
                    video_frames = gr.Gallery(
                        label="Sampled frames",
                        columns=6,
                        object_fit="contain",
                        visible=False,
                        elem_id="video-frames",
                    )
                    video_in.change(
                        on_video,
                        video_in,
                        [video_summary, video_plot, video_frames],
                        api_visibility="private",
                        **run,
                    )

        # the named API endpoints (no visible components: scripts call them through gradio_client)
        with gr.Row(visible=False):
            api_image = gr.File(label="image", type="filepath", file_types=["image"])
            api_rois = gr.JSON(label="rois")
            api_video = gr.File(label="video", type="filepath", file_types=VIDEO_FILE_TYPES)
            api_out = gr.JSON(label="result")
            api_buttons = [gr.Button(f"api-{name}") for name in ("image", "regions", "video")]
        api_buttons[0].click(api_score_image, api_image, api_out, api_name="score_image", **run)
        api_buttons[1].click(
            api_score_regions, [api_image, api_rois], api_out, api_name="score_regions", **run
        )
        api_buttons[2].click(api_score_video, api_video, api_out, api_name="score_video", **run)

    app.queue(max_size=limits.max_queue, default_concurrency_limit=limits.concurrency)
    app.rsfiqa_limits = limits
    # Gradio's own upload cap (one for all inputs): the largest kind this server accepts
    app.rsfiqa_upload_cap_mb = max(limits.image_max_mb, limits.video_max_mb if pipelines.video else 0.0)
    app.rsfiqa_css = _CSS
    return app


def _collect_rois(
    service: QualityService, state: dict, rois_text: str, masks: Sequence[str] | None
) -> list[Any]:
    """The Regions tab's ROIs: the JSON list plus one boolean mask per uploaded mask file."""
    size = tuple(state["size"])
    text = (rois_text or "").strip() or "[]"
    try:
        rois = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"the regions are not valid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(rois, list):
        rois = [rois]
    rois = rois + [service.load_mask(m, size) for m in (masks or [])]
    return service.parse_rois(rois, size) if rois else []


def launch_app(
    app,
    host: str = "127.0.0.1",
    port: int = 7860,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
):
    """Serve ``app`` on ``host:port`` (never a public share link). The upload cap is the larger limit;
    each tab checks its own (images, videos) and says so."""
    limits: ServeLimits = getattr(app, "rsfiqa_limits", ServeLimits())
    max_mb = getattr(app, "rsfiqa_upload_cap_mb", max(limits.image_max_mb, limits.video_max_mb))
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        show_error=False,
        max_file_size=int(max_mb * MB),
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        ssr_mode=False,
        mcp_server=False,
        css=getattr(app, "rsfiqa_css", None),
    )
