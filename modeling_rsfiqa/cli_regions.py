"""``rsfiqa regions IMAGE --box x0,y0,x1,y1 --mask m.png --points x,y[;x,y]``: quality of regions of interest.

SEAGULL (Chen et al., arXiv 2411.10161) per ROI: quality, importance and distortion severities, printed as a
table and drawn as an overlay PNG (each ROI tinted by its quality, outlined and labelled with its index).
ROIs keep the order given on the command line (``--box``, ``--mask`` and ``--points`` may be mixed and
repeated). Point prompts need SAM (``--sam-model DIR``). Exit codes: 0 all scored, 1 some ROIs failed with
``--skip-errors``, 2 bad input (a bad ROI without ``--skip-errors``, a missing model, an unreadable file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "register",
    "run_regions",
    "load_region_pipeline",
    "parse_box",
    "parse_points",
    "region_overlay",
    "format_table",
    "NoDefaultModelError",
]

TASK = "region-quality"


class NoDefaultModelError(FileNotFoundError):
    """``pipeline("region-quality")`` has no shipped default in this installation."""


def parse_box(text: str) -> list[float]:
    """``"x0,y0,x1,y1"`` -> four floats (pixels)."""
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"a box is x0,y0,x1,y1 (four numbers), got {text!r}")
    return vals


def parse_points(text: str) -> dict:
    """``"x,y;x,y"`` -> ``{"points": [[x, y], ...]}`` (all foreground)."""
    points = []
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        try:
            x, y = (float(v) for v in part.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"points are x,y[;x,y...], got {text!r}") from None
        points.append([x, y])
    if not points:
        raise argparse.ArgumentTypeError(f"points are x,y[;x,y...], got {text!r}")
    return {"points": points}


class _AppendROI(argparse.Action):
    """Append ``(kind, parsed value, text)`` to ``namespace.rois``: one list keeps the command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        kind = self.metavar_kind
        try:
            value = {"box": parse_box, "points": parse_points, "mask": str}[kind](values)
        except argparse.ArgumentTypeError as err:
            parser.error(f"{option_string}: {err}")
        rois = list(getattr(namespace, "rois", None) or [])
        rois.append((kind, value, values))
        namespace.rois = rois


def _roi_action(kind: str) -> type:
    return type(f"_Append{kind.title()}", (_AppendROI,), {"metavar_kind": kind})


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "regions",
        help="quality, importance and distortions of regions of interest (SEAGULL)",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("image", help="the image file")
    p.add_argument(
        "--box", action=_roi_action("box"), metavar="X0,Y0,X1,Y1", help="a box ROI in pixels (repeatable)"
    )
    p.add_argument(
        "--mask",
        action=_roi_action("mask"),
        metavar="MASK.png",
        help="a mask ROI: non-zero = in (repeatable)",
    )
    p.add_argument(
        "--points",
        action=_roi_action("points"),
        metavar="X,Y[;X,Y]",
        help="a ROI from SAM point prompts (repeatable; needs --sam-model)",
    )
    p.add_argument("--model", default=None, help="SEAGULL model folder (default: the shipped ROI model)")
    p.add_argument(
        "--sam-model", default=None, help="folder saved from SamModel + SamProcessor (for --points)"
    )
    p.add_argument("--out", default=None, help="overlay PNG (default: IMAGE_STEM.regions.png here)")
    p.add_argument("--json", dest="json_out", default=None, help="write the results to this JSON file")
    p.add_argument(
        "--skip-errors", action="store_true", help="score the good ROIs and list the bad ones in the table"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=run_regions, rois=None)


def load_region_pipeline(model: str | None = None, threads: int | None = None) -> Any:
    """``pipeline("region-quality")`` for ``model``, or the registered default (offline).

    Raises :class:`NoDefaultModelError` when no model is given and none ships with this installation."""
    import torch
    from transformers import pipeline
    from transformers.pipelines import PIPELINE_REGISTRY

    import modeling_rsfiqa  # noqa: F401  (registers the task)

    if threads:
        torch.set_num_threads(threads)
    if model is not None:
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model folder {model!r} does not exist")
        return pipeline(TASK, model=str(model))
    _, task_info, _ = PIPELINE_REGISTRY.check_task(TASK)
    default = (task_info.get("default") or {}).get("model")
    folder = default[0] if isinstance(default, (tuple, list)) else default
    if isinstance(folder, dict):  # {"pt": (name, revision)}
        folder = next(iter(folder.values()))[0]
    if not folder or not Path(str(folder)).is_dir():
        where = f" ({folder} is missing)" if folder else ""
        raise NoDefaultModelError(
            f"no region-quality model ships with this installation{where}; pass --model DIR "
            "(a folder saved from SeagullForRegionQuality or SeagullForConditionalGeneration + its processor)"
        )
    return pipeline(TASK)


def _load_mask(path: str) -> np.ndarray:
    """A mask image file (any mode; non-zero = in the ROI) -> bool ``(H, W)``."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) > 0
    except (OSError, ValueError) as err:
        raise ValueError(f"mask {path} cannot be read ({err})") from err


def _quality_colour(quality: float | None) -> tuple[int, int, int]:
    from .report import colormap

    if quality is None:
        return (128, 128, 128)
    return tuple(int(c) for c in colormap(np.array([quality / 100.0]))[0])


def region_overlay(
    image: Image.Image, masks: list[np.ndarray | None], results: list[dict], alpha: float = 0.35
) -> Image.Image:
    """``image`` (original size) with each ROI tinted by its quality (red = worse, green = better), its outline
    drawn in the same colour and its index written at the top-left of its box; failed ROIs are grey."""
    from scipy.ndimage import binary_erosion

    base = np.asarray(image.convert("RGB"), dtype=np.float64).copy()
    h, w = base.shape[:2]
    thick = max(1, round(max(h, w) / 300))
    for mask, result in zip(masks, results):
        if mask is None:
            continue
        colour = np.array(_quality_colour(result.get("quality")), dtype=np.float64)
        base[mask] = (1 - alpha) * base[mask] + alpha * colour
        edge = mask & ~binary_erosion(mask, iterations=thick, border_value=0)  # the outline, inside the ROI
        base[edge] = colour
    out = Image.fromarray(base.round().astype(np.uint8))
    draw = ImageDraw.Draw(out)
    try:
        font = ImageFont.load_default(size=max(10, round(max(h, w) / 40)))
    except TypeError:  # Pillow < 10.1: one fixed-size bitmap font
        font = ImageFont.load_default()
    for i, (mask, result) in enumerate(zip(masks, results)):
        if mask is None:
            continue
        y = int(np.flatnonzero(mask.any(1))[0])  # the label sits on the ROI's top-most pixel
        x = int(np.flatnonzero(mask[y])[0])
        label = f"{i}" if "error" not in result else f"{i}!"
        left, top, right, bottom = draw.textbbox((x + 2, y + 1), label, font=font)
        if right + 2 > w:  # keep the label inside the image
            x -= right + 2 - w
            left, top, right, bottom = draw.textbbox((x + 2, y + 1), label, font=font)
        draw.rectangle(
            (left - 2, top - 1, right + 2, bottom + 1), fill=_quality_colour(result.get("quality"))
        )
        draw.text((x + 2, y + 1), label, fill=(255, 255, 255), font=font)
    return out


def _top_distortions(distortions: dict[str, float], k: int = 3, floor: float = 0.05) -> str:
    ranked = sorted(distortions.items(), key=lambda kv: -kv[1])
    shown = [f"{t} {s:.2f}" for t, s in ranked[:k] if s >= floor]
    return ", ".join(shown) if shown else "none"


def format_table(rows: list[dict]) -> str:
    """One line per ROI: index, kind, quality, importance, area, box and the top distortions (severity)."""
    lines = [
        f"{'roi':>3}  {'kind':<6}  {'quality':>7}  {'import.':>7}  {'area':>6}  {'box':<22}  "
        "top distortions (severity 0-1)  [quality/importance 0-100, higher = better / matters more]"
    ]
    for row in rows:
        head = f"{row['index']:>3}  {row['kind']:<6}"
        if "error" in row:
            lines.append(f"{head}  {'-':>7}  {'-':>7}  {'-':>6}  error: {row['error']}")
            continue
        box = ",".join(str(v) for v in row["box"])
        lines.append(
            f"{head}  {row['quality']:7.1f}  {row['importance']:7.1f}  {row['area']:6.1%}  {box:<22}  "
            f"{_top_distortions(row['distortions'])}"
        )
    return "\n".join(lines)


def run_regions(args: argparse.Namespace) -> int:
    from .image_io import ImageLoadError, load_image_rgb
    from .processing_seagull import regions_to_masks

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    specs = list(args.rois or [])
    if not specs:
        return fail("give at least one ROI: --box x0,y0,x1,y1, --mask MASK.png or --points x,y")
    has_points = any(kind == "points" for kind, _, _ in specs)
    if has_points and not args.sam_model:
        return fail(
            "--points ROIs are turned into masks by SAM: pass --sam-model DIR (a folder saved from "
            "transformers SamModel + SamProcessor), or give the ROI as --box / --mask"
        )
    try:
        image = load_image_rgb(args.image)
    except ImageLoadError as err:
        return fail(str(err))
    regions: list[Any] = []
    for i, (kind, value, _text) in enumerate(specs):
        if kind == "mask":
            try:
                value = _load_mask(value)
            except ValueError as err:
                return fail(f"{args.image}: ROI {i} (mask): {err}")
        regions.append(value)
    sam_model = None
    try:
        pipe = load_region_pipeline(args.model, args.threads)
        if has_points:
            from .partition import load_sam_model

            sam_model, sam_image_processor = load_sam_model(args.sam_model)
            pipe.processor.sam_image_processor = sam_image_processor
    except (FileNotFoundError, ValueError, OSError) as err:
        return fail(str(err))
    # the masks, for the overlay (SAM runs once: its masks are handed to the pipeline)
    masks, _ = regions_to_masks(
        image,
        regions,
        sam_model,
        getattr(pipe.processor, "sam_image_processor", None),
        args.image,
        skip_errors=True,
    )
    inputs = [
        m if kind == "points" and m is not None else r for (kind, _, _), r, m in zip(specs, regions, masks)
    ]
    try:
        results = pipe(args.image, regions=inputs, skip_errors=args.skip_errors, sam_model=sam_model)
    except ValueError as err:  # RegionError and ImageLoadError are ValueErrors naming the image and ROI
        return fail(str(err))
    rows = []
    for i, ((kind, value, text), result) in enumerate(zip(specs, results)):
        row = {"index": i, "kind": kind, "input": value if kind != "mask" else text, **result}
        rows.append(row)
    print(format_table(rows))
    out = Path(args.out) if args.out else Path(f"{Path(args.image).stem}.regions.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    region_overlay(image, [m if "error" not in r else None for m, r in zip(masks, results)], results).save(
        out
    )
    print(f"overlay: {out}")
    if args.json_out:
        payload = {"image": str(args.image), "model": args.model or "default", "regions": rows}
        Path(args.json_out).write_text(json.dumps(payload, indent=2))
        print(f"json: {args.json_out}")
    return 1 if any("error" in r for r in results) else 0
