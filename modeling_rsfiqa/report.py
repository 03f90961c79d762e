"""Pictures of where quality is lost: overlays of the RSA attention and per-region quality, and reports.

Pure PIL + numpy (no plotting dependency): a colour map, overlays with region boundaries, a labelled
tile per image, a PNG contact sheet, for videos a per-frame quality plot (inline SVG) and a filmstrip of the
sampled frames, and a self-contained HTML page with the PNGs and SVGs embedded.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .partition import resize_label_map

__all__ = [
    "colormap",
    "overlay",
    "region_boundaries",
    "quality_overlay",
    "attention_overlay",
    "render_tile",
    "write_html_report",
    "contact_sheet",
    "frame_score_plot_svg",
    "filmstrip",
]

# anchor colours of a perceptually ordered "bad -> good" ramp (dark red, orange, yellow, light green, green)
_RAMP = np.array(
    [[120, 0, 20], [215, 60, 20], [245, 190, 40], [150, 210, 90], [20, 140, 70]], dtype=np.float64
)
# and a neutral -> hot ramp for attention (dark blue, purple, orange, yellow)
_HOT = np.array([[20, 20, 80], [110, 30, 130], [230, 90, 40], [255, 230, 90]], dtype=np.float64)


def colormap(values: np.ndarray, ramp: str = "quality") -> np.ndarray:
    """Map values in [0, 1] (NaN -> grey) to uint8 RGB with a piecewise-linear ramp."""
    anchors = _RAMP if ramp == "quality" else _HOT
    v = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(anchors) - 1)
    lo = np.floor(v).astype(int).clip(0, len(anchors) - 2)
    t = (v - lo)[..., None]
    rgb = anchors[lo] * (1 - t) + anchors[lo + 1] * t
    rgb[np.isnan(values)] = 128
    return rgb.astype(np.uint8)


def region_boundaries(label_map: np.ndarray) -> np.ndarray:
    """Boolean map of pixels whose right or lower neighbour lies in another region."""
    edge = np.zeros(label_map.shape, dtype=bool)
    edge[:, :-1] |= label_map[:, :-1] != label_map[:, 1:]
    edge[:-1, :] |= label_map[:-1, :] != label_map[1:, :]
    return edge


def overlay(
    image: Image.Image, heat_rgb: np.ndarray, alpha: float = 0.5, edges: np.ndarray | None = None
) -> Image.Image:
    """Blend an RGB heat map (any size; resized) over ``image`` and draw region ``edges`` in white."""
    base = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = base.shape[:2]
    heat = np.asarray(Image.fromarray(heat_rgb).resize((w, h), Image.NEAREST), dtype=np.float64)
    out = (1 - alpha) * base + alpha * heat
    if edges is not None:
        out[edges] = 255
    return Image.fromarray(out.round().astype(np.uint8))


def _display_copy(
    image: Image.Image, region_map: np.ndarray, max_side: int
) -> tuple[Image.Image, np.ndarray]:
    scale = min(1.0, max_side / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.convert("RGB").resize(size, Image.BILINEAR), resize_label_map(region_map, (size[1], size[0]))


def quality_overlay(
    image: Image.Image,
    result: dict[str, Any],
    score_range: Sequence[float],
    max_side: int = 320,
    higher_is_better: bool = True,
) -> Image.Image:
    """Per-region predicted quality painted over the image (red = worse, green = better)."""
    shown, labels = _display_copy(image, result["region_map"], max_side)
    lut = np.full(int(labels.max()) + 1, np.nan)
    lo, hi = score_range
    for r in result["regions"]:
        q = (r["score"] - lo) / (hi - lo)
        lut[r["label"]] = q if higher_is_better else 1 - q
    return overlay(shown, colormap(lut[labels], "quality"), 0.45, region_boundaries(labels))


def attention_overlay(image: Image.Image, result: dict[str, Any], max_side: int = 320) -> Image.Image:
    """The RSA global attention map (where the model looks) over the image, region edges drawn.

    Shown relative to the image's own range (min -> dark, max -> bright): importances of one image are often
    close together, and it is their contrast that says where the model looks."""
    shown, labels = _display_copy(image, result["region_map"], max_side)
    lut = np.zeros(int(labels.max()) + 1)
    for r in result["regions"]:
        lut[r["label"]] = r["importance"]
    spread = lut.max() - lut.min()
    lut = (lut - lut.min()) / spread if spread > 1e-6 else np.full_like(lut, 0.5)
    return overlay(shown, colormap(lut[labels], "attention"), 0.5, region_boundaries(labels))


def render_tile(
    image: Image.Image,
    result: dict[str, Any],
    title: str,
    score_range: Sequence[float],
    higher_is_better: bool = True,
    max_side: int = 256,
) -> Image.Image:
    """Image | region-quality overlay | attention overlay, with a caption line."""
    shown, _ = _display_copy(image, result["region_map"], max_side)
    panels = [
        shown,
        quality_overlay(image, result, score_range, max_side, higher_is_better),
        attention_overlay(image, result, max_side),
    ]
    w, h = shown.size
    tile = Image.new("RGB", (3 * w + 8, h + 22), "white")
    for i, panel in enumerate(panels):
        tile.paste(panel, (i * (w + 4), 22))
    ImageDraw.Draw(tile).text((4, 4), f"{title}   score {result['score']:.1f}", fill=(0, 0, 0))
    return tile


def contact_sheet(rows: list[list[Image.Image]], pad: int = 6) -> Image.Image:
    """Grid of tiles (rows may differ in length)."""
    widths = [sum(t.width for t in row) + pad * (len(row) + 1) for row in rows]
    heights = [max(t.height for t in row) + pad for row in rows]
    sheet = Image.new("RGB", (max(widths), sum(heights) + pad), (235, 235, 235))
    y = pad
    for row, rh in zip(rows, heights):
        x = pad
        for t in row:
            sheet.paste(t, (x, y))
            x += t.width + pad
        y += rh
    return sheet


def frame_score_plot_svg(
    times: Sequence[float | None],
    scores: Sequence[float],
    score_range: Sequence[float],
    video_score: float | None = None,
    width: int = 560,
    height: int = 200,
) -> str:
    """Inline SVG line plot of per-frame quality against time (seconds; frame number when times are unknown).

    The y axis spans ``score_range``; the video's pooled ``video_score`` is drawn as a dashed line. Points are
    coloured on the same bad -> good ramp as the image overlays."""
    if not len(scores):
        raise ValueError("frame_score_plot_svg needs at least one frame score")
    known = all(t is not None for t in times) and len(times) == len(scores)
    xs = np.asarray([float(t) for t in times] if known else np.arange(len(scores)), dtype=np.float64)
    ys = np.asarray(scores, dtype=np.float64)
    lo, hi = (float(v) for v in score_range)
    left, right, top, bottom = 44, 12, 12, 34
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = float(xs.min()), float(xs.max())
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def py(y: float) -> float:
        return top + (1 - (min(max(y, lo), hi) - lo) / (hi - lo)) * ph

    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' font-family='sans-serif' font-size='11'>",
        f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='white' stroke='#999'/>",
    ]
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        value = lo + frac * (hi - lo)
        y = py(value)
        out.append(f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eee'/>")
        out.append(f"<text x='{left - 4}' y='{y + 4:.1f}' text-anchor='end'>{value:g}</text>")
    for x in np.linspace(x0, x1, 5):
        out.append(f"<text x='{px(x):.1f}' y='{top + ph + 14}' text-anchor='middle'>{x:.3g}</text>")
    label = "time (s)" if known else "sampled frame"
    out.append(f"<text x='{left + pw / 2:.1f}' y='{height - 4}' text-anchor='middle'>{label}</text>")
    if video_score is not None:
        y = py(video_score)
        out.append(
            f"<line x1='{left}' x2='{left + pw}' y1='{y:.1f}' y2='{y:.1f}' stroke='#555' "
            f"stroke-dasharray='4 3'><title>video score {video_score:.2f}</title></line>"
        )
    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys))
    out.append(f"<polyline points='{points}' fill='none' stroke='#3060a0' stroke-width='1.5'/>")
    colours = colormap((np.clip(ys, lo, hi) - lo) / (hi - lo), "quality")
    for x, y, (r, g, b) in zip(xs, ys, colours):
        tip = f"{x:.3f} s: {y:.2f}" if known else f"frame {int(x)}: {y:.2f}"
        out.append(
            f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='4' fill='rgb({r},{g},{b})' stroke='#222'>"
            f"<title>{tip}</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)


def filmstrip(
    frames: Sequence[np.ndarray | Image.Image], captions: Sequence[str], height: int = 96
) -> Image.Image:
    """The frames side by side at a common ``height``, each with its caption (e.g. time and score) below."""
    if not len(frames) or len(frames) != len(captions):
        raise ValueError("filmstrip needs one caption per frame and at least one frame")
    tiles = []
    for frame, caption in zip(frames, captions):
        image = (
            frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame, dtype=np.uint8))
        )
        image = image.convert("RGB")
        w = max(1, round(image.width * height / max(image.height, 1)))
        tile = Image.new("RGB", (max(w, 72), height + 16), "white")
        tile.paste(image.resize((w, height), Image.BILINEAR), ((tile.width - w) // 2, 0))
        ImageDraw.Draw(tile).text((2, height + 2), caption, fill=(0, 0, 0))
        tiles.append(tile)
    return contact_sheet([tiles], pad=4)


def _png_data_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_html_report(path: str | Path, title: str, intro: str, sections: list[dict[str, Any]]) -> Path:
    """Self-contained HTML: each section has a ``heading``, optional ``text`` and ``items`` of
    ``{"image": PIL.Image, "caption": str}`` (embedded as PNG data URIs) or ``{"svg": str, "caption": str}``
    (inline SVG markup, e.g. :func:`frame_score_plot_svg`)."""
    path = Path(path)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:24px;background:#fafafa;color:#222}"
        "figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:13px;max-width:800px}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}</style>",
        f"</head><body><h1>{html.escape(title)}</h1><p>{intro}</p>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section['heading'])}</h2>")
        if section.get("text"):
            parts.append(f"<p>{section['text']}</p>")
        for item in section.get("items", []):
            body = item["svg"] if "svg" in item else f"<img src='{_png_data_uri(item['image'])}'>"
            parts.append(f"<figure>{body}<figcaption>{html.escape(item['caption'])}</figcaption></figure>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
