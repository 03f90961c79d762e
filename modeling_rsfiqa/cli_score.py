"""``rsfiqa score FILE... [--model DIR] [--video-model DIR] [--json FILE] [--report DIR]``.

Images are scored with regions (RSFIQA, ``pipeline("image-quality")``); videos, told apart by extension
(mp4 webm mkv mov avi ..., and GIFs with more than one frame), with Q-CLIP (``pipeline("video-quality")``):
a score, per-frame scores and their times; the report plots them and shows the sampled frames."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .video_io import VIDEO_EXTENSIONS

__all__ = [
    "register",
    "run_score",
    "load_pipeline",
    "load_video_pipeline",
    "default_video_model",
    "expand_inputs",
    "is_video_input",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}
# raw .yuv has no header (size unknown): not picked up from folders
VIDEO_SUFFIXES = set(VIDEO_EXTENSIONS) - {".yuv"}
NO_VIDEO_MODEL = (
    "no video-quality model ships with this installation yet; pass --video-model DIR "
    "(a saved Q-CLIP folder) to score videos"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "score", help="score images (RSFIQA) and videos (Q-CLIP): file paths or folders"
    )
    p.add_argument("inputs", nargs="+", help="image / video files, or folders of them")
    p.add_argument("--model", default=None, help="image model folder (default: the shipped rsfiqa-mobile)")
    p.add_argument(
        "--video-model",
        default=None,
        help="video model folder, a saved Q-CLIP (default: the registered video-quality default, if any)",
    )
    p.add_argument(
        "--json", dest="json_out", default=None, help="write all results (regions included) to this file"
    )
    p.add_argument("--report", default=None, help="write an HTML report with region overlays to this folder")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first unreadable image (default: report and go on)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run_score)


def load_pipeline(model: str | None = None, threads: int | None = None, tune_allocator: bool = True):
    """The image-quality pipeline for ``model`` (default: the packaged model), offline.

    ``tune_allocator``: raise glibc's malloc thresholds for this process (``runtime.tune_cpu_allocator``),
    right for the command line, the demo and the web app, which own their process; library users get the
    pipeline without it unless they ask."""
    import torch
    from transformers import pipeline

    from . import DEFAULT_MODEL_DIR

    if threads:
        torch.set_num_threads(threads)
    target = model or str(DEFAULT_MODEL_DIR)
    if not Path(target).exists() and model is None:
        raise FileNotFoundError(
            f"The default model is missing from this installation ({target}); pass --model DIR"
        )
    return pipeline("image-quality", model=target, tune_allocator=tune_allocator)


def default_video_model() -> str | None:
    """The model registered as the ``video-quality`` task's default (a folder), or None when none ships."""
    from transformers.pipelines import PIPELINE_REGISTRY

    from . import VideoQualityPipeline  # noqa: F401  (registers the task)

    try:
        _, task, _ = PIPELINE_REGISTRY.check_task("video-quality")
    except KeyError:
        return None
    model = (task.get("default") or {}).get("model")
    if isinstance(model, dict):  # the older {"pt": (name, revision)} form
        model = model.get("pt")
    if isinstance(model, (tuple, list)):
        model = model[0]
    return str(model) if model else None


def load_video_pipeline(model: str | None = None, threads: int | None = None):
    """The video-quality pipeline for ``model`` (default: the registered default), offline.

    Raises FileNotFoundError with the advice to pass ``--video-model`` when no model is given and none ships."""
    import torch
    from transformers import pipeline

    if threads:
        torch.set_num_threads(threads)
    target = model or default_video_model()
    if target is None or (model is None and not Path(target).exists()):
        raise FileNotFoundError(NO_VIDEO_MODEL)
    if not Path(target).is_dir():
        raise FileNotFoundError(f"--video-model {target}: not a folder (a saved Q-CLIP model)")
    return pipeline("video-quality", model=target)


def is_video_input(path: str | Path) -> bool:
    """A video by its extension; a GIF counts when it has more than one frame (a still GIF is an image)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        try:
            with Image.open(path) as image:
                return int(getattr(image, "n_frames", 1)) > 1
        except (OSError, ValueError):
            return False  # unreadable: let the image pipeline report it
    return suffix in VIDEO_EXTENSIONS


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files as given; folders expanded to their image and video files (sorted)."""
    wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += [str(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in wanted]
        else:
            out.append(item)
    return out


def _nearest_frames(times: list[float | None], path: str, height: int = 96) -> list | None:
    """Thumbnails of the frames at ``times`` (seconds), decoded by seeking; None when they cannot be had."""
    import numpy as np

    from .video_io import VideoLoadError, VideoReader

    if not times or any(t is None for t in times):
        return None
    try:
        with VideoReader(path) as video:
            indices = [int(np.abs(video.times - t).argmin()) for t in times]
            w, h = max(video.width, 1), max(video.height, 1)
            size = (max(1, round(w * height / h)), height)
            return video.get_frames(indices, size=size)
    except (VideoLoadError, OSError, IndexError):
        return None


def _score_videos(files: list[str], args: argparse.Namespace) -> tuple[list[dict], int]:
    """Score the videos; all of them fail with one clear message when no video model can be had."""
    from tqdm.auto import tqdm

    try:
        pipe = load_video_pipeline(args.video_model, args.threads)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return [{"score": None, "error": str(err), "source": f} for f in files], len(files)
    results, failed = [], 0
    for path in tqdm(files, desc="scoring videos", unit="video", disable=len(files) < 2, file=sys.stderr):
        result = pipe(path, skip_errors=not args.strict)
        if result["score"] is None:
            failed += 1
            print(f"error: {result['error']}", file=sys.stderr)
        results.append(result)
    lo, hi = (float(v) for v in pipe.model.config.score_range)
    print(
        f"{'score':>7}  {'frames':>6}  {'worst frame (s, score)':<24}  video    [{lo:g}-{hi:g}, higher is better]"
    )
    for r in results:
        if r["score"] is None:
            print(f"{'-':>7}  {'':>6}  {'(unreadable)':<24}  {r['source']}")
            continue
        k = min(range(len(r["frame_scores"])), key=r["frame_scores"].__getitem__)
        t = r["frame_times"][k]
        worst = (
            f"{t:.2f} s {r['frame_scores'][k]:.1f}" if t is not None else f"#{k} {r['frame_scores'][k]:.1f}"
        )
        print(f"{r['score']:7.2f}  {len(r['frame_scores']):>6}  {worst:<24}  {r['source']}")
    for r in results:
        r["_score_range"] = (lo, hi)
    return results, failed


def _video_report_items(result: dict) -> list[dict]:
    from .report import filmstrip, frame_score_plot_svg

    name = Path(result["source"]).name
    scores, times = result["frame_scores"], result["frame_times"]
    items = [
        {
            "svg": frame_score_plot_svg(times, scores, result["_score_range"], result["score"]),
            "caption": f"{result['source']}: {result['score']:.2f} (per sampled frame; dashed: the video score)",
        }
    ]
    frames = _nearest_frames(times, result["source"])
    if frames is not None:
        captions = [f"{t:.2f} s  {s:.1f}" for t, s in zip(times, scores)]
        items.append({"image": filmstrip(frames, captions), "caption": f"{name}: the sampled frames"})
    return items


def run_score(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    files = expand_inputs(args.inputs)
    if not files:
        print("no images or videos found", file=sys.stderr)
        return 2
    is_video = [is_video_input(f) for f in files]
    videos = [f for f, v in zip(files, is_video) if v]
    images = [f for f, v in zip(files, is_video) if not v]
    results, failed = [], 0
    config = None
    if images:
        pipe = load_pipeline(args.model, args.threads)
        config = pipe.model.config
        for path in tqdm(images, desc="scoring", unit="img", disable=len(images) < 4, file=sys.stderr):
            result = pipe(path, skip_errors=not args.strict, return_region_map=bool(args.report))
            if result["score"] is None:
                failed += 1
                print(f"error: {result['error']}", file=sys.stderr)
            results.append(result)
        direction = "higher is better" if config.higher_is_better else "lower is better"
        lo, hi = config.score_range
        print(f"{'score':>7}  {'worst region (box, score)':<34}  image    [{lo:g}-{hi:g}, {direction}]")
        for r in results:
            if r["score"] is None:
                print(f"{'-':>7}  {'(unreadable)':<34}  {r['source']}")
                continue
            worst = min(r["regions"], key=lambda g: g["score"] if config.higher_is_better else -g["score"])
            worst_text = f"{worst['box']} {worst['score']:.1f}"
            print(f"{r['score']:7.2f}  {worst_text:<34}  {r['source']}")
    video_results: list[dict] = []
    if videos:
        video_results, video_failed = _score_videos(videos, args)
        failed += video_failed
    if args.json_out:
        serial = [
            {"kind": "image", **{k: v for k, v in r.items() if k not in ("attention_map", "region_map")}}
            for r in results
        ]
        serial += [
            {"kind": "video", **{k: v for k, v in r.items() if k != "_score_range"}} for r in video_results
        ]
        Path(args.json_out).write_text(json.dumps(serial, indent=2))
    if args.report:
        from .image_io import load_image_rgb
        from .report import render_tile, write_html_report

        sections = []
        items = []
        for r in results:
            if r["score"] is None:
                continue
            tile = render_tile(
                load_image_rgb(r["source"]),
                r,
                Path(r["source"]).name,
                config.score_range,
                config.higher_is_better,
            )
            items.append({"image": tile, "caption": f"{r['source']}: {r['score']:.2f}"})
        if items:
            sections.append({"heading": "Images", "items": items})
        video_items = [
            item for r in video_results if r["score"] is not None for item in _video_report_items(r)
        ]
        if video_items:
            sections.append(
                {
                    "heading": "Videos",
                    "text": "Per video: the quality of each sampled frame over time (Q-CLIP), then the sampled "
                    "frames with their time and score.",
                    "items": video_items,
                }
            )
        out = write_html_report(
            Path(args.report) / "index.html",
            "rsfiqa scores",
            "Each image: the image, per-region predicted quality (red = worse), RSA attention. "
            "Each video: per-frame quality and the sampled frames.",
            sections,
        )
        print(f"report: {out}")
    return 1 if failed else 0
