"""SEAGULL-100w-style synthetic ROI samples: one distorted region per image, labelled by a full-reference metric.

After SEAGULL (Chen et al., "SEAGULL: No-reference Image Quality Assessment for Regions of Interest via
Vision-Language Instruction Tuning", arXiv 2411.10161), whose SEAGULL-100w labels ROIs of synthetically
distorted images with a full-reference IQA metric (TOPIQ-FR there). Here one ROI of a clean image is
distorted, inside the ROI only, and a few other, untouched ROIs of the same image are recorded as clean.

ROIs (:func:`random_roi`): axis-aligned boxes and irregular blobs (star-shaped polygons with a random
low-order Fourier radius, rotated), of log-uniform area and aspect ratio.

Distortion (:data:`ROI_DISTORTIONS`): the six SEAGULL types -- blur, colorfulness, compression, contrast,
exposure, noise -- x :data:`NUM_LEVELS` levels, each type with several implementations from
:mod:`modeling_rsfiqa.distortions` (KADID-10k ones and extra ones: Gaussian / lens / motion / resampling
blur; Lab-chroma and luma-blend saturation, up AND down; JPEG, JPEG 2000 (at target PSNRs), WebP, AVIF; contrast down, up and
S-curve; exposure up and down, in Lab gamma and in linear-light EV; Gaussian, chroma, impulse, speckle,
Poisson and correlated noise), each with its own 5 parameter values, so that a model does not learn one
implementation per type. The distortion is rendered on a crop around the ROI (at least 128 px a side,
aligned to the 16 px codec grid) and pasted with a SOFT edge that fades INWARD: the blending weight is
``clip(d / FEATHER_PX, 0, 1)`` with ``d`` the Euclidean distance (px) from a mask pixel to the nearest pixel
outside the mask (``scipy.ndimage.distance_transform_edt``). So every pixel outside the mask is exactly
the reference, there is no hard seam for a model to key on, and the core of the ROI is fully distorted.

Labels (``fr_metric``, default HaarPSI of ``piq``: Reisenhofer et al., "A Haar wavelet-based perceptual
similarity index for image quality assessment", Signal Processing: Image Communication 2018; weight free,
colour aware through its YIQ chroma channels, a similarity in [0, 1] with 1 for identical images):

* ``quality`` of a ROI = ``100 * s(D[box], R[box])``: the metric between the bounding-box patch of the
  distorted rendering ``D`` (the crop as distorted everywhere, i.e. the ROI content under this distortion,
  independent of how much of its box a blob fills) and the same patch of the reference ``R``. 0..100,
  higher is better; a clean ROI is 100.
* ``importance`` of a ROI = ``100 * sqrt(min(1, (1 - s(C, R)) / IMPORTANCE_SATURATION))`` with ``C`` the
  whole image with ONLY that ROI distorted (what is stored). It grows with the ROI's area and its
  severity; 0..100, higher = matters more to the whole image. The square root spreads the small values
  (half of all ROIs change the whole-image similarity by less than ~0.03); ``IMPORTANCE_SATURATION`` = 0.5
  is the loss at which a ROI counts as fully important. A clean ROI has importance 0 (the image with only
  it "distorted" is the reference).
* ``distortions`` / ``levels`` / ``severities`` are known from the synthesis: severity = level /
  NUM_LEVELS in (0, 1], clean = no entry (severity 0).
The raw similarities are kept (``quality_raw``, ``importance_raw``) so other mappings can be applied later.

This module is the library part; ``datasets_scripts/seagull_synthetic.py`` plans, caches and stores whole
datasets (schema documented there).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .distortions import DISTORTION_SPECS, EXTRA_DISTORTION_SPECS, apply_distortion

__all__ = [
    "SEAGULL_DISTORTION_TYPES",
    "NUM_LEVELS",
    "FEATHER_PX",
    "IMPORTANCE_SATURATION",
    "ROI_DISTORTIONS",
    "RoiImplementation",
    "FRMetric",
    "FR_METRICS",
    "Roi",
    "RoiLabels",
    "RoiSample",
    "severity_of_level",
    "quality_from_similarity",
    "importance_from_similarity",
    "mask_to_rle",
    "rle_to_mask",
    "mask_box",
    "box_mask",
    "blob_mask",
    "random_roi",
    "clean_rois",
    "feather_weights",
    "render_roi_distortion",
    "label_roi",
    "synthesize_roi_sample",
    "stable_seed",
    "check_implementations",
    "roi_dataset_features",
    "load_roi_dataset",
    "pair_order_fraction",
    "roi_property_figures",
    "nested_rois",
    "sweep_roi_samples",
    "roi_sweep_figures",
]

#: The six SEAGULL distortion types, in the order of the reference's prompt.
SEAGULL_DISTORTION_TYPES: tuple[str, ...] = (
    "blur",
    "colorfulness",
    "compression",
    "contrast",
    "exposure",
    "noise",
)
NUM_LEVELS = 5
FEATHER_PX = 3.0  # width (px) of the inward soft edge of a distorted ROI
IMPORTANCE_SATURATION = 0.5  # whole-image similarity loss that maps to importance 100
MIN_DISTORTION_CROP = 128  # px: codecs and global operators see at least this much context
CODEC_GRID = 16  # px: crops start on the codec block grid of the whole image


@dataclass(frozen=True)
class RoiImplementation:
    """One implementation of a SEAGULL type: a :mod:`distortions` name and its parameter per level 1..5."""

    name: str
    parameters: tuple[float, ...]

    def __post_init__(self):
        if self.name not in DISTORTION_SPECS and self.name not in EXTRA_DISTORTION_SPECS:
            raise ValueError(f"unknown distortion implementation {self.name!r}")
        if len(self.parameters) != NUM_LEVELS:
            raise ValueError(f"{self.name}: expected {NUM_LEVELS} parameters, got {len(self.parameters)}")


#: SEAGULL type -> its implementations, each with 5 parameter values (level 1 mildest). Values were chosen
#: so that the ROI quality label falls with the level for every implementation on natural photos at ~512 px.
ROI_DISTORTIONS: dict[str, tuple[RoiImplementation, ...]] = {
    "blur": (
        RoiImplementation("gaussian_blur", (0.8, 1.5, 2.5, 3.5, 5.0)),
        RoiImplementation("lens_blur", (1, 2, 3, 5, 7)),
        RoiImplementation("motion_blur", (5, 9, 13, 17, 23)),
        RoiImplementation("resample_blur", (2.0, 3.0, 4.0, 6.0, 8.0)),
    ),
    "colorfulness": (
        RoiImplementation("color_saturation_decrease", (0.6, 0.4, 0.25, 0.1, 0.0)),
        RoiImplementation("color_saturation_increase", (1.4, 1.8, 2.3, 2.9, 3.6)),
        RoiImplementation("saturation_blend_decrease", (0.7, 0.5, 0.3, 0.15, 0.0)),
        RoiImplementation("saturation_blend_increase", (1.5, 2.0, 2.7, 3.5, 5.0)),
    ),
    "compression": (
        RoiImplementation("jpeg", (40, 25, 15, 8, 3)),
        RoiImplementation("jpeg2000_psnr", (37, 33, 30, 27, 24)),
        RoiImplementation("webp", (40, 20, 10, 4, 0)),
        RoiImplementation("avif", (45, 30, 18, 8, 1)),
    ),
    "contrast": (
        RoiImplementation("contrast_change", (0.75, 0.6, 0.45, 0.3, 0.15)),
        RoiImplementation("contrast_increase", (1.3, 1.6, 2.0, 2.6, 3.4)),
        RoiImplementation("contrast_sigmoid", (5.0, 7.0, 9.5, 13.0, 18.0)),
        RoiImplementation("contrast_blend_decrease", (0.7, 0.55, 0.4, 0.25, 0.12)),
    ),
    "exposure": (
        RoiImplementation("brighten", (1.3, 1.6, 2.0, 2.6, 3.4)),
        RoiImplementation("darken", (1.3, 1.6, 2.0, 2.6, 3.4)),
        RoiImplementation("exposure_up", (0.4, 0.8, 1.2, 1.7, 2.3)),
        RoiImplementation("exposure_down", (-0.6, -1.1, -1.7, -2.4, -3.2)),
    ),
    "noise": (
        RoiImplementation("white_noise", (0.001, 0.002, 0.004, 0.007, 0.012)),
        RoiImplementation("white_noise_color", (0.001, 0.002, 0.004, 0.007, 0.012)),
        RoiImplementation("impulse_noise", (0.01, 0.02, 0.04, 0.07, 0.12)),
        RoiImplementation("multiplicative_noise", (0.005, 0.01, 0.02, 0.035, 0.06)),
        RoiImplementation("poisson_noise", (400, 150, 60, 25, 10)),
        RoiImplementation("correlated_noise", (0.025, 0.04, 0.06, 0.09, 0.13)),
    ),
}


# --------------------------------------------------------------------------- full-reference metrics


@dataclass(frozen=True)
class FRMetric:
    """A weight-free full-reference SIMILARITY in [0, 1] (1 = identical) from a maintained library."""

    name: str
    fn: Callable[[Any, Any], Any]  # (distorted, reference) float tensors (1, 3, H, W) in [0, 1] -> scalar
    min_side: int
    citation: str

    def __call__(self, distorted: np.ndarray, reference: np.ndarray) -> float:
        """Similarity of two HxWx3 uint8 arrays (clipped to [0, 1]; higher is better).

        Identical arrays give exactly 1.0 without running the metric (a similarity's identity value).
        """
        if distorted.shape != reference.shape:
            raise ValueError(f"{self.name}: shapes differ, {distorted.shape} vs {reference.shape}")
        if np.array_equal(distorted, reference):
            return 1.0
        if min(distorted.shape[:2]) < self.min_side:
            raise ValueError(
                f"{self.name} needs patches of at least {self.min_side} px a side, got {distorted.shape[:2]}"
            )
        import torch

        def tensor(a: np.ndarray):
            return torch.from_numpy(np.array(a, dtype=np.float32)).permute(2, 0, 1)[None].div_(255.0)

        with torch.no_grad():
            value = float(self.fn(tensor(distorted), tensor(reference)))
        return float(min(1.0, max(0.0, value)))


def _piq():
    try:
        import piq
    except ImportError as err:  # pragma: no cover - piq is in the roi-data and dev extras
        raise ImportError(
            "The ROI labels need the optional package piq (pip install 'rsfiqa[roi-data]' or pip install piq)"
        ) from err
    return piq


FR_METRICS: dict[str, FRMetric] = {
    "haarpsi": FRMetric(
        "haarpsi",
        lambda d, r: _piq().haarpsi(d, r, data_range=1.0),
        16,
        "Reisenhofer et al., A Haar wavelet-based perceptual similarity index, SPIC 2018 (piq.haarpsi)",
    ),
    "ssim": FRMetric(
        "ssim",
        lambda d, r: _piq().ssim(d, r, data_range=1.0),
        11,
        "Wang et al., Image quality assessment: from error visibility to structural similarity, TIP 2004 (piq.ssim)",
    ),
    "ms_ssim": FRMetric(
        "ms_ssim",
        lambda d, r: _piq().multi_scale_ssim(d, r, data_range=1.0),
        161,
        "Wang, Simoncelli, Bovik, Multiscale structural similarity, Asilomar 2003 (piq.multi_scale_ssim)",
    ),
}


def _metric(metric: str | FRMetric) -> FRMetric:
    if isinstance(metric, FRMetric):
        return metric
    if metric not in FR_METRICS:
        raise ValueError(f"unknown full-reference metric {metric!r}; choose from {sorted(FR_METRICS)}")
    return FR_METRICS[metric]


def severity_of_level(level: int) -> float:
    """Severity in (0, 1] of a synthesis level 1..NUM_LEVELS (clean ROIs have severity 0)."""
    if isinstance(level, bool) or not 1 <= int(level) <= NUM_LEVELS:
        raise ValueError(f"level must be in 1..{NUM_LEVELS}, got {level!r}")
    return int(level) / NUM_LEVELS


def quality_from_similarity(similarity: float) -> float:
    """ROI quality label 0..100 (higher is better) from the patch similarity: ``100 * s``."""
    return 100.0 * float(np.clip(similarity, 0.0, 1.0))


def importance_from_similarity(similarity: float) -> float:
    """ROI importance label 0..100 (higher = matters more) from the whole-image similarity ``s``:
    ``100 * sqrt(min(1, (1 - s) / IMPORTANCE_SATURATION))``."""
    loss = 1.0 - float(np.clip(similarity, 0.0, 1.0))
    return 100.0 * math.sqrt(min(1.0, loss / IMPORTANCE_SATURATION))


# --------------------------------------------------------------------------- masks, boxes and RLE


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError as err:  # pragma: no cover - pycocotools is a core dependency
        raise ImportError("COCO RLE needs the package pycocotools (pip install pycocotools)") from err
    return mask_api


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE ``{"size": [h, w], "counts": str}`` of a boolean HxW mask (JSON-ready)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {mask.shape}")
    rle = _mask_api().encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_to_mask(rle: dict[str, Any]) -> np.ndarray:
    """Boolean HxW mask of a COCO RLE (compressed ``counts`` as str/bytes, or uncompressed list)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"not a COCO RLE dict with 'size' and 'counts': {str(rle)[:80]}")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    api = _mask_api()
    if isinstance(counts, list):
        encoded = api.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        encoded = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    try:
        return api.decode(encoded).astype(bool)
    except Exception as err:
        raise ValueError(f"RLE of size {[h, w]} does not decode: {err}") from err


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` of a non-empty mask, with x1/y1 EXCLUSIVE (``mask[y0:y1, x0:x1]``)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        raise ValueError("empty mask has no box")
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def box_mask(shape: tuple[int, int], box: Sequence[int]) -> np.ndarray:
    """Boolean HxW mask of the box ``(x0, y0, x1, y1)`` (x1/y1 exclusive)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    h, w = shape
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(f"box {list(box)} is empty or outside an image of {w}x{h}")
    mask = np.zeros(shape, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def blob_mask(
    shape: tuple[int, int],
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    harmonics: Sequence[tuple[float, float]],
    vertices: int = 96,
) -> np.ndarray:
    """Irregular star-shaped blob: an ellipse ``radii`` (rx, ry) rotated by ``angle`` whose radius is
    modulated by ``1 + sum_k a_k cos(k phi + p_k)`` (``harmonics`` = [(a_2, p_2), (a_3, p_3), ...]).
    Always one connected region; clipped to the image."""
    from skimage.draw import polygon

    phi = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    r = np.ones_like(phi)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        r += amp * np.cos(k * phi + phase)
    r = np.clip(r, 0.3, None)
    x = radii[0] * r * np.cos(phi)
    y = radii[1] * r * np.sin(phi)
    ca, sa = math.cos(angle), math.sin(angle)
    xs = center[0] + ca * x - sa * y
    ys = center[1] + sa * x + ca * y
    mask = np.zeros(shape, dtype=bool)
    rr, cc = polygon(ys, xs, shape=shape)
    mask[rr, cc] = True
    return mask


@dataclass
class Roi:
    """A region: boolean mask, its box ``(x0, y0, x1, y1)`` (x1/y1 exclusive) and how it was drawn."""

    mask: np.ndarray
    box: tuple[int, int, int, int]
    shape: str  # "box" | "blob" | "mask"

    @property
    def area(self) -> float:
        """Fraction of the image covered by the mask."""
        return float(self.mask.mean())

    @classmethod
    def from_mask(cls, mask: np.ndarray, shape: str = "mask") -> Roi:
        mask = np.asarray(mask, dtype=bool)
        return cls(mask, mask_box(mask), shape)


def _boxes_overlap(a: Sequence[int], b: Sequence[int], margin: int = 0) -> bool:
    return not (
        a[2] + margin <= b[0] or b[2] + margin <= a[0] or a[3] + margin <= b[1] or b[3] + margin <= a[1]
    )


def random_roi(
    shape: tuple[int, int],
    rng: np.random.Generator,
    kind: str | None = None,
    area_range: tuple[float, float] = (0.01, 0.3),
    aspect_range: tuple[float, float] = (1 / 3, 3.0),
    min_side: int = 32,
    avoid: Sequence[Sequence[int]] = (),
    avoid_margin: int = 8,
    tries: int = 50,
) -> Roi | None:
    """A random box or blob (``kind``; random when None) of log-uniform area fraction in ``area_range``
    and aspect (w/h) in ``aspect_range``, whose box is at least ``min_side`` px a side and does not
    overlap any box in ``avoid`` (with ``avoid_margin`` px to spare). ``None`` when nothing fits."""
    h, w = shape
    if min(h, w) < min_side:
        raise ValueError(f"image of {w}x{h} is smaller than the minimum ROI side {min_side}")
    for _ in range(tries):
        this_kind = kind or ("box" if rng.random() < 0.5 else "blob")
        area = math.exp(rng.uniform(math.log(area_range[0]), math.log(area_range[1]))) * h * w
        aspect = math.exp(rng.uniform(math.log(aspect_range[0]), math.log(aspect_range[1])))
        bw = int(np.clip(round(math.sqrt(area * aspect)), min_side, w))
        bh = int(np.clip(round(area / max(bw, 1)), min_side, h))
        if this_kind == "box":
            x0 = int(rng.integers(0, w - bw + 1))
            y0 = int(rng.integers(0, h - bh + 1))
            roi = Roi(box_mask(shape, (x0, y0, x0 + bw, y0 + bh)), (x0, y0, x0 + bw, y0 + bh), "box")
        elif this_kind == "blob":
            # an ellipse of the same area as the box: radii sqrt(4 A / pi) scaled by the aspect
            rx, ry = bw / math.sqrt(math.pi), bh / math.sqrt(math.pi)
            cx = rng.uniform(rx * 0.8, w - rx * 0.8)
            cy = rng.uniform(ry * 0.8, h - ry * 0.8)
            harmonics = [(rng.uniform(0.0, 0.3 / k), rng.uniform(0.0, 2 * math.pi)) for k in range(2, 6)]
            mask = blob_mask(shape, (cx, cy), (rx, ry), rng.uniform(0.0, math.pi), harmonics)
            if not mask.any():
                continue
            roi = Roi(mask, mask_box(mask), "blob")
        else:
            raise ValueError(f"kind must be 'box', 'blob' or None, got {kind!r}")
        x0, y0, x1, y1 = roi.box
        if min(x1 - x0, y1 - y0) < min_side:
            continue
        if any(_boxes_overlap(roi.box, other, avoid_margin) for other in avoid):
            continue
        return roi
    return None


# --------------------------------------------------------------------------- rendering and labels


def clean_rois(shape: tuple[int, int], rng: np.random.Generator, avoid: Roi, n: int, **kwargs) -> list[Roi]:
    """Up to ``n`` random ROIs (``random_roi`` with ``kwargs``, 30 tries each) that overlap neither ``avoid``
    nor each other: the undistorted ROIs a sample holds next to its distorted one. Stops at the first that
    does not fit, so it may return fewer."""
    taken, found = [avoid.box], []
    for _ in range(n):
        roi = random_roi(shape, rng, avoid=taken, tries=30, **kwargs)
        if roi is None:
            break
        taken.append(roi.box)
        found.append(roi)
    return found


def feather_weights(mask: np.ndarray, feather: float = FEATHER_PX) -> np.ndarray:
    """Blending weight in [0, 1]: 0 outside the mask, rising INWARD over ``feather`` px to 1."""
    mask = np.asarray(mask, dtype=bool)
    if feather <= 0:
        return mask.astype(np.float32)
    # distance of each mask pixel to the nearest non-mask pixel (image borders count as outside too,
    # so a ROI touching the border fades there like everywhere else)
    padded = np.pad(mask, 1, constant_values=False)
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    return np.clip(dist / feather, 0.0, 1.0).astype(np.float32) * mask


def _distortion_window(shape: tuple[int, int], box: Sequence[int]) -> tuple[int, int, int, int]:
    """Crop around ``box`` (>= 16 px margin, >= MIN_DISTORTION_CROP a side where the image allows),
    starting on the CODEC_GRID so block codecs see the same grid as on the whole image."""
    h, w = shape
    x0, y0, x1, y1 = box
    out = []
    for lo, hi, size in ((x0, x1, w), (y0, y1, h)):
        lo, hi = max(0, lo - CODEC_GRID), min(size, hi + CODEC_GRID)
        short = MIN_DISTORTION_CROP - (hi - lo)
        if short > 0:
            lo, hi = max(0, lo - (short + 1) // 2), min(size, hi + (short + 1) // 2)
            lo, hi = max(0, min(lo, hi - MIN_DISTORTION_CROP)), min(size, max(hi, lo + MIN_DISTORTION_CROP))
        lo -= lo % CODEC_GRID
        out.append((lo, hi))
    (cx0, cx1), (cy0, cy1) = out
    return cx0, cy0, cx1, cy1


def render_roi_distortion(
    reference: np.ndarray,
    roi: Roi,
    implementation: str,
    parameter: float,
    seed: int = 0,
    feather: float = FEATHER_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """Distort ``reference`` (HxWx3 uint8) inside ``roi`` only.

    Returns ``(composite, patch)``: the whole image with only the ROI distorted (soft inward edge, every
    pixel outside the mask equal to the reference), and the ROI's bounding-box patch as distorted
    everywhere (what the quality label is measured on).
    """
    if reference.ndim != 3 or reference.shape[2] != 3 or reference.dtype != np.uint8:
        raise ValueError(f"reference must be an HxWx3 uint8 array, got {reference.dtype} {reference.shape}")
    if roi.mask.shape != reference.shape[:2]:
        raise ValueError(f"ROI mask {roi.mask.shape} does not match the image {reference.shape[:2]}")
    cx0, cy0, cx1, cy1 = _distortion_window(reference.shape[:2], roi.box)
    crop = reference[cy0:cy1, cx0:cx1]
    distorted_crop = apply_distortion(np.ascontiguousarray(crop), implementation, parameter, seed=seed)
    weights = feather_weights(roi.mask, feather)[cy0:cy1, cx0:cx1, None]
    composite = reference.copy()
    blended = crop.astype(np.float32) * (1.0 - weights) + distorted_crop.astype(np.float32) * weights
    composite[cy0:cy1, cx0:cx1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = roi.box
    patch = distorted_crop[y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]
    return composite, patch


@dataclass
class RoiLabels:
    """Labels of one ROI. ``distortions`` / ``levels`` / ``severities`` are aligned (empty = clean)."""

    roi: Roi
    quality: float
    importance: float
    quality_raw: float
    importance_raw: float
    distortions: list[str] = field(default_factory=list)
    levels: list[int] = field(default_factory=list)
    severities: list[float] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        """The ROI as stored in the dataset (see ``datasets_scripts/seagull_synthetic.py``)."""
        return {
            "rle": mask_to_rle(self.roi.mask),
            "box": list(self.roi.box),
            "shape": self.roi.shape,
            "area": self.roi.area,
            "quality": self.quality,
            "importance": self.importance,
            "quality_raw": self.quality_raw,
            "importance_raw": self.importance_raw,
            "distortions": list(self.distortions),
            "levels": list(self.levels),
            "severities": list(self.severities),
        }


def label_roi(
    roi: Roi,
    reference: np.ndarray,
    composite: np.ndarray,
    patch: np.ndarray | None = None,
    metric: str | FRMetric = "haarpsi",
) -> tuple[float, float, float, float]:
    """``(quality, importance, quality_raw, importance_raw)`` of ``roi``.

    ``patch`` is the ROI's box as distorted everywhere (from :func:`render_roi_distortion`); None for a
    clean ROI, whose patch is taken from ``composite`` and whose importance is 0 by definition.
    """
    fr = _metric(metric)
    x0, y0, x1, y1 = roi.box
    ref_patch = reference[y0:y1, x0:x1]
    q_raw = fr(composite[y0:y1, x0:x1] if patch is None else patch, ref_patch)
    i_raw = 1.0 if patch is None else fr(composite, reference)
    return quality_from_similarity(q_raw), importance_from_similarity(i_raw), q_raw, i_raw


@dataclass
class RoiSample:
    """One synthetic sample: the image with one distorted ROI, and the labels of all its ROIs
    (``rois[0]`` is the distorted one, the others are clean)."""

    image: np.ndarray
    distortion: str
    implementation: str
    parameter: float
    level: int
    severity: float
    rois: list[RoiLabels]


def check_implementations() -> None:
    """Run every implementation of :data:`ROI_DISTORTIONS` once on a small array, so that a missing codec
    (Pillow without AVIF / OpenJPEG / WebP) stops a long build at its start, with the name of the culprit."""
    probe = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for distortion, impls in ROI_DISTORTIONS.items():
        for impl in impls:
            try:
                apply_distortion(probe, impl.name, impl.parameters[0])
            except Exception as err:
                raise RuntimeError(
                    f"{distortion} implementation {impl.name!r} cannot run here: {err}"
                ) from err


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts (stable across runs and platforms, unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def synthesize_roi_sample(
    reference: np.ndarray,
    distortion: str,
    level: int,
    seed: int,
    implementation: str | None = None,
    roi: Roi | None = None,
    num_clean: int | tuple[int, int] = (2, 4),
    area_range: tuple[float, float] = (0.01, 0.3),
    clean_area_range: tuple[float, float] = (0.005, 0.12),
    min_side: int = 32,
    metric: str | FRMetric = "haarpsi",
    feather: float = FEATHER_PX,
) -> RoiSample:
    """Make one sample from a clean HxWx3 uint8 ``reference``.

    ``distortion`` is a SEAGULL type; ``implementation`` (one of ``ROI_DISTORTIONS[distortion]``), the
    ROI and the clean ROIs are drawn from ``seed`` when not given. ``num_clean`` = count or (min, max)
    of clean ROIs: boxes that do not overlap the distorted ROI's box (8 px margin) nor each other;
    fewer are returned when the image has no room left.
    """
    if distortion not in ROI_DISTORTIONS:
        raise ValueError(f"unknown SEAGULL distortion {distortion!r}; choose from {SEAGULL_DISTORTION_TYPES}")
    severity = severity_of_level(level)
    rng = np.random.default_rng(seed)
    impls = {impl.name: impl for impl in ROI_DISTORTIONS[distortion]}
    if implementation is None:
        implementation = list(impls)[int(rng.integers(len(impls)))]
    if implementation not in impls:
        raise ValueError(f"{implementation!r} is not an implementation of {distortion!r}: {sorted(impls)}")
    shape = reference.shape[:2]
    if roi is None:
        roi = random_roi(shape, rng, area_range=area_range, min_side=min_side)
        if roi is None:  # pragma: no cover - an empty image always has room for one ROI
            raise ValueError(f"no ROI of side >= {min_side} px fits an image of {shape}")
    parameter = float(impls[implementation].parameters[int(level) - 1])
    composite, patch = render_roi_distortion(
        reference, roi, implementation, parameter, seed=int(rng.integers(2**31)), feather=feather
    )
    labels = [
        RoiLabels(
            roi, *label_roi(roi, reference, composite, patch, metric), [distortion], [int(level)], [severity]
        )
    ]
    low, high = (num_clean, num_clean) if isinstance(num_clean, int) else num_clean
    wanted = int(rng.integers(low, high + 1))
    for clean in clean_rois(shape, rng, roi, wanted, area_range=clean_area_range, min_side=min_side):
        labels.append(RoiLabels(clean, *label_roi(clean, reference, composite, None, metric)))
    return RoiSample(composite, distortion, implementation, parameter, int(level), severity, labels)


# --------------------------------------------------------------------------- controlled sweeps (held-out checks)


def nested_rois(
    shape: tuple[int, int],
    rng: np.random.Generator,
    areas: Sequence[float],
    kind: str | None = None,
    aspect_range: tuple[float, float] = (0.5, 2.0),
    min_side: int = 32,
) -> list[Roi] | None:
    """ROIs of the same shape, centre and aspect whose area fractions are ``areas`` (ascending), each inside
    the next: a box or a blob (``kind``; random when None) scaled about one centre, placed so the largest fits
    the image. ``None`` when the largest does not fit or the smallest is under ``min_side`` px a side."""
    areas = sorted(float(a) for a in areas)
    if not areas or areas[0] <= 0 or areas[-1] > 1:
        raise ValueError(f"areas must be fractions in (0, 1], got {list(areas)}")
    h, w = shape
    kind = kind or ("box" if rng.random() < 0.5 else "blob")
    aspect = math.exp(rng.uniform(math.log(aspect_range[0]), math.log(aspect_range[1])))
    sides = [(math.sqrt(a * h * w * aspect), math.sqrt(a * h * w / aspect)) for a in areas]
    big_w, big_h = sides[-1]
    if big_w > w or big_h > h or min(sides[0]) < min_side:
        return None
    cx = rng.uniform(big_w / 2, w - big_w / 2)
    cy = rng.uniform(big_h / 2, h - big_h / 2)
    if kind == "box":
        rois = []
        for bw, bh in sides:
            x0, y0 = int(round(cx - bw / 2)), int(round(cy - bh / 2))
            box = (max(0, x0), max(0, y0), min(w, x0 + int(round(bw))), min(h, y0 + int(round(bh))))
            rois.append(Roi(box_mask(shape, box), box, "box"))
        return rois
    if kind != "blob":
        raise ValueError(f"kind must be 'box', 'blob' or None, got {kind!r}")
    # one star-shaped outline scaled about its centre: the smaller blobs lie inside the larger ones. The
    # radius modulation is kept mild (as in random_roi) so the outline stays inside the largest box.
    angle = rng.uniform(0.0, math.pi)
    harmonics = [(rng.uniform(0.0, 0.3 / k), rng.uniform(0.0, 2 * math.pi)) for k in range(2, 6)]
    rois = []
    for bw, bh in sides:
        mask = blob_mask(
            shape, (cx, cy), (bw / math.sqrt(math.pi), bh / math.sqrt(math.pi)), angle, harmonics
        )
        if not mask.any():
            return None
        rois.append(Roi(mask, mask_box(mask), "blob"))
    return rois


def sweep_roi_samples(
    reference: np.ndarray,
    distortion: str,
    implementation: str,
    rois: Sequence[Roi],
    levels: Sequence[int],
    seed: int,
    clean: Sequence[Roi] = (),
    metric: str | FRMetric = "haarpsi",
    feather: float = FEATHER_PX,
) -> list[RoiSample]:
    """One sample per ``(roi, level)`` (ROI-major order) with everything else held fixed: the implementation,
    the distortion's random state (``seed``) and the ``clean`` ROIs. The controlled series behind the
    held-out checks "quality falls and importance grows with the severity" (one ROI, ``levels`` 1..5) and
    "importance grows with the area" (nested ROIs from :func:`nested_rois`, one level)."""
    impls = {impl.name: impl for impl in ROI_DISTORTIONS.get(distortion, ())}
    if implementation not in impls:
        raise ValueError(f"{implementation!r} is not an implementation of {distortion!r}: {sorted(impls)}")
    samples = []
    for roi in rois:
        for level in levels:
            parameter = float(impls[implementation].parameters[int(level) - 1])
            composite, patch = render_roi_distortion(
                reference, roi, implementation, parameter, seed=seed, feather=feather
            )
            severity = severity_of_level(level)
            labels = [
                RoiLabels(
                    roi,
                    *label_roi(roi, reference, composite, patch, metric),
                    [distortion],
                    [int(level)],
                    [severity],
                )
            ]
            labels += [RoiLabels(c, *label_roi(c, reference, composite, None, metric)) for c in clean]
            samples.append(
                RoiSample(composite, distortion, implementation, parameter, int(level), severity, labels)
            )
    return samples


# --------------------------------------------------------------------------- the stored dataset


def roi_dataset_features():
    """``datasets.Features`` of an ROI dataset (synthetic or converted; schema in
    ``datasets_scripts/seagull_synthetic.py``)."""
    from datasets import Features, Image, List, Value

    roi = {
        "rle": {"size": List(Value("int32")), "counts": Value("string")},
        "box": List(Value("int32")),
        "shape": Value("string"),
        "area": Value("float32"),
        "quality": Value("float32"),
        "importance": Value("float32"),
        "quality_raw": Value("float32"),
        "importance_raw": Value("float32"),
        "distortions": List(Value("string")),
        "levels": List(Value("int32")),
        "severities": List(Value("float32")),
    }
    return Features(
        {
            "sample_id": Value("string"),
            "image": Image(),
            "reference_id": Value("string"),
            "source": Value("string"),
            "split": Value("string"),
            "width": Value("int32"),
            "height": Value("int32"),
            "distortion": Value("string"),
            "implementation": Value("string"),
            "parameter": Value("float32"),
            "level": Value("int32"),
            "severity": Value("float32"),
            "rois": List(roi),
        }
    )


def load_roi_dataset(path: Any, split: str | None = None, cache_dir: str | None = None):
    """Load an ROI dataset folder (``data/<split>-XXXXX-of-XXXXX.parquet`` shards) as a ``DatasetDict``
    (or one split). Errors name the folder when it has no shards or an unfinished build."""
    from pathlib import Path

    import datasets

    root = Path(path)
    data = root / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"no ROI dataset at {root} (missing {data})")
    files: dict[str, list[str]] = {}
    for shard in sorted(data.glob("*.parquet")):
        name = shard.name.split("-", 1)[0]
        files.setdefault(name, []).append(str(shard))
    if not files:
        raise FileNotFoundError(f"no parquet shards in {data}")
    for name, shards in files.items():
        total = shards[0].rsplit("-of-", 1)[-1].removesuffix(".parquet")
        if total.isdigit() and len(shards) != int(total):
            raise ValueError(
                f"{root}: split {name!r} has {len(shards)} of {int(total)} shards; the build is unfinished "
                "(re-run the builder with the same arguments to resume)"
            )
    if split is not None and split not in files:
        raise ValueError(f"{root} has no split {split!r}; splits: {sorted(files)}")
    wanted = {split: files[split]} if split else files
    dd = datasets.load_dataset("parquet", data_files=wanted, cache_dir=cache_dir)
    return dd[split] if split else dd


# ----------------------------------------------------------------------------------------------------------
# held-out checks of an ROI model (issue targets): orderings that the labels imply
# ----------------------------------------------------------------------------------------------------------
def pair_order_fraction(
    scores: Sequence[float], keys: Sequence[float], groups: Sequence[Any], min_ratio: float = 1.0
) -> tuple[float, int]:
    """Fraction of pairs (same ``group``, different ``key``) whose ``scores`` are STRICTLY ordered like their
    ``keys`` (ties count as wrong), and the number of pairs. With ``min_ratio`` > 1 only pairs whose larger
    key is at least ``min_ratio`` times the smaller count (keys > 0). ``nan`` when there is no pair."""
    s, k = np.asarray(scores, dtype=np.float64), np.asarray(keys, dtype=np.float64)
    g = np.asarray([hash(x) for x in groups])
    same = g[:, None] == g[None, :]
    lo, hi = k[:, None], k[None, :]
    valid = same & (hi > lo)
    if min_ratio > 1.0:
        valid &= hi >= min_ratio * lo
    n = int(valid.sum())
    if not n:
        return float("nan"), 0
    right = (s[None, :] > s[:, None]) & valid
    return float(right.sum() / n), n


def roi_property_figures(
    records: Sequence[dict[str, Any]],
    distortion_types: Sequence[str] = SEAGULL_DISTORTION_TYPES,
    strong_levels: Sequence[int] = (4, 5),
    min_area_ratio: float = 1.5,
    prefix: str = "pred_",
) -> dict[str, Any]:
    """The held-out properties of SEAGULL issue #9 from per-ROI records (``training_seagull.predict_roi_rows``):

    * ``severity_order``: among distorted ROIs of the same type and different levels, the fraction of pairs
      where the stronger level has the lower quality;
    * ``type_top1_strong``: distortion-type top-1 (argmax of the per-type severities) of the distorted ROIs at
      ``strong_levels``;
    * ``importance_vs_severity``: same type, different levels: the stronger has the higher importance;
    * ``importance_vs_area``: same type and level, areas at least ``min_area_ratio`` apart: the larger has the
      higher importance.

    ``prefix="pred_"`` judges the model; ``prefix=""`` the labels themselves (``quality`` / ``importance``;
    no type figure), the ceiling the model can be compared with. Pair counts are reported alongside.
    """
    dist = [r for r in records if r["distortion"] is not None and int(r["level"]) > 0]
    if not dist:
        raise ValueError("no distorted ROI in the records (need 'distortion' and 'level' > 0)")
    types = list(distortion_types)
    kind = [r["distortion"] for r in dist]
    level = [int(r["level"]) for r in dist]
    quality = [-float(r[prefix + "quality"]) for r in dist]  # lower quality = more severe
    importance = [float(r[prefix + "importance"]) for r in dist]
    figures: dict[str, Any] = {}
    figures["severity_order"], figures["severity_order_pairs"] = pair_order_fraction(quality, level, kind)
    figures["importance_vs_severity"], figures["importance_vs_severity_pairs"] = pair_order_fraction(
        importance, level, kind
    )
    figures["importance_vs_area"], figures["importance_vs_area_pairs"] = pair_order_fraction(
        importance, [float(r["area"]) for r in dist], list(zip(kind, level)), min_ratio=min_area_ratio
    )
    if prefix + "severity" in dist[0]:
        strong = [r for r in dist if int(r["level"]) in set(strong_levels)]
        hits = [types[int(np.argmax(r[prefix + "severity"]))] == r["distortion"] for r in strong]
        figures["type_top1_strong"] = float(np.mean(hits)) if hits else float("nan")
        figures["type_top1_strong_n"] = len(hits)
        hits_all = [types[int(np.argmax(r[prefix + "severity"]))] == r["distortion"] for r in dist]
        figures["type_top1_all"] = float(np.mean(hits_all))
    figures["n_distorted_rois"] = len(dist)
    figures["n_rois"] = len(records)
    return figures


def roi_sweep_figures(
    records: Sequence[dict[str, Any]],
    prefix: str = "pred_",
    distortion_types: Sequence[str] = SEAGULL_DISTORTION_TYPES,
    strong_levels: Sequence[int] = (4, 5),
) -> dict[str, Any]:
    """The held-out properties of SEAGULL issue #9 on CONTROLLED sweeps (``datasets_scripts/seagull_sweeps.py``):
    records of distorted ROIs carry ``sweep`` (``"severity"`` | ``"area"``) and ``group`` (what is held fixed).

    * ``severity_order``: severity sweeps (one photo, ROI, type and implementation; levels 1..5): fraction of
      level pairs where the stronger level has the lower quality;
    * ``importance_vs_severity``: the same pairs, the stronger level has the higher importance;
    * ``importance_vs_area``: area sweeps (one photo, type, implementation and level; nested ROIs): the larger
      ROI has the higher importance;
    * ``severity_order_<type>``: the severity order per distortion type;
    * ``type_top1_strong``: distortion-type top-1 (argmax of the per-type severities) of the severity series'
      ROIs at ``strong_levels`` (when the records carry ``<prefix>severity``).

    ``prefix=""`` judges the labels themselves. Ties count as wrong; pair counts are reported alongside.
    Unlike :func:`roi_property_figures`, which pairs ROIs across photos (where the labels themselves reach
    only ~0.90 / 0.76 / 0.89), every pair here differs in one factor only.
    """
    sev = [r for r in records if r.get("sweep") == "severity" and r.get("distortion") and r["level"] > 0]
    area = [r for r in records if r.get("sweep") == "area" and r.get("distortion") and r["level"] > 0]
    if not sev and not area:
        raise ValueError("no sweep records (need 'sweep' = 'severity' | 'area', 'group', and a distortion)")
    figures: dict[str, Any] = {}
    if sev:
        quality = [-float(r[prefix + "quality"]) for r in sev]
        level = [int(r["level"]) for r in sev]
        group = [r["group"] for r in sev]
        figures["severity_order"], figures["severity_order_pairs"] = pair_order_fraction(
            quality, level, group
        )
        figures["importance_vs_severity"], figures["importance_vs_severity_pairs"] = pair_order_fraction(
            [float(r[prefix + "importance"]) for r in sev], level, group
        )
        for kind in sorted({r["distortion"] for r in sev}):
            idx = [i for i, r in enumerate(sev) if r["distortion"] == kind]
            figures[f"severity_order_{kind}"], _ = pair_order_fraction(
                [quality[i] for i in idx], [level[i] for i in idx], [group[i] for i in idx]
            )
    if area:
        figures["importance_vs_area"], figures["importance_vs_area_pairs"] = pair_order_fraction(
            [float(r[prefix + "importance"]) for r in area],
            [float(r["area"]) for r in area],
            [r["group"] for r in area],
        )
    strong = [r for r in sev if int(r["level"]) in set(strong_levels) and prefix + "severity" in r]
    if strong:  # the severity series hold every type at every level: a balanced type check
        types = list(distortion_types)
        hits = [types[int(np.argmax(r[prefix + "severity"]))] == r["distortion"] for r in strong]
        figures["type_top1_strong"], figures["type_top1_strong_n"] = float(np.mean(hits)), len(hits)
    figures["n_severity_rois"], figures["n_area_rois"] = len(sev), len(area)
    return figures
