"""``rsfiqa serve [--host 127.0.0.1] [--port 7860]``: the web app (image, region and video quality).

Binds to localhost unless ``--host`` says otherwise and never creates a public share link. Models are
loaded once, before the server starts; see :mod:`modeling_rsfiqa.app`.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["register", "run_serve"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="web app in the browser: image, region and video quality (needs the 'app' extra)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 for all interfaces)"
    )
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--model", default=None, help="image model folder (default: the shipped rsfiqa-mobile)")
    p.add_argument("--region-model", default=None, help="region-quality model (default: the task's default)")
    p.add_argument("--video-model", default=None, help="video-quality model (default: the task's default)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="model calls run at once (default 1: each uses all threads)",
    )
    p.add_argument("--max-queue", type=int, default=64, help="requests allowed to wait (default 64)")
    p.add_argument("--max-image-mb", type=float, default=50.0, help="largest image upload in MB (default 50)")
    p.add_argument(
        "--max-video-mb", type=float, default=1024.0, help="largest video upload in MB (default 1024)"
    )
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        from .app import ServeLimits, build_app, launch_app, load_pipelines, require_gradio

        require_gradio()
    except ModuleNotFoundError as err:
        if err.name != "gradio":
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        limits = ServeLimits(
            concurrency=args.concurrency,
            max_queue=args.max_queue,
            image_max_mb=args.max_image_mb,
            video_max_mb=args.max_video_mb,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("rsfiqa serve: loading models ...", file=sys.stderr, flush=True)
    pipelines = load_pipelines(args.model, args.region_model, args.video_model, threads=args.threads)
    for task, reason in pipelines.unavailable.items():
        print(f"rsfiqa serve: {task} not available: {reason}", file=sys.stderr, flush=True)
    app = build_app(pipelines, limits)
    launch_app(app, host=args.host, port=args.port)
    return 0
