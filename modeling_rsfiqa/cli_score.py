"""``rsfiqa score IMAGE... [--model DIR] [--json FILE] [--report DIR]``: score images with regions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "run_score", "load_pipeline", "expand_inputs"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("score", help="score images (file paths or folders) with the RSFIQA model")
    p.add_argument("inputs", nargs="+", help="image files or folders of images")
    p.add_argument("--model", default=None, help="model folder (default: the shipped rsfiqa-mobile)")
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


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files as given; folders expanded to their image files (sorted)."""
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            out += [str(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            out.append(item)
    return out


def run_score(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    files = expand_inputs(args.inputs)
    if not files:
        print("no images found", file=sys.stderr)
        return 2
    pipe = load_pipeline(args.model, args.threads)
    config = pipe.model.config
    results, failed = [], 0
    for path in tqdm(files, desc="scoring", unit="img", disable=len(files) < 4, file=sys.stderr):
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
    if args.json_out:
        serial = [{k: v for k, v in r.items() if k not in ("attention_map", "region_map")} for r in results]
        Path(args.json_out).write_text(json.dumps(serial, indent=2))
    if args.report:
        from .image_io import load_image_rgb
        from .report import render_tile, write_html_report

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
        out = write_html_report(
            Path(args.report) / "index.html",
            "rsfiqa scores",
            "Each row: the image, per-region predicted quality (red = worse), RSA attention.",
            [{"heading": "Images", "items": items}],
        )
        print(f"report: {out}")
    return 1 if failed else 0
