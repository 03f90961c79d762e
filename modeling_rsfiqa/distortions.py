"""KADID-10k-style synthetic distortions: 25 types x 5 levels, deterministic for a given seed.

The type list, its order (:data:`KADID_DISTORTION_NAMES`, KADID id = index + 1) and the spirit of
the level parameters follow KADID-10k: H. Lin, V. Hosu, D. Saupe, "KADID-10k: A Large-scale
Artificially Distorted IQA Database", QoMEX 2019. The implementations are ours, built on
scikit-image / scipy / Pillow (KADID's MATLAB code is not reproduced): level 1 is the mildest and
level 5 the strongest, and every type gets strictly worse (lower PSNR against the clean image) as
the level rises. Parameters are absolute (pixels, quality factors, variances on [0, 1]) and were
chosen for images of roughly KADID's 512x384; counts of patches/blocks scale with the image area.

Randomness: ``distort(image, name, level, seed)`` draws from ``np.random.default_rng([seed, id])``,
so a (seed, type) pair sees the same noise field / patch positions at every level and only the
strength changes, which is what makes the levels nested and monotone.

JPEG2000 uses Pillow's OpenJPEG codec (``PIL.features.check("jpg_2000")``). When Pillow was built
without OpenJPEG, ``jpeg2000`` falls back to a wavelet-like low-pass approximation (box
down-sampling + bicubic up-sampling: the blur and edge ringing of low-rate JPEG2000 without its
exact artefacts) and warns once; :data:`JPEG2000_NATIVE` tells which one is in use. On images
smaller than about 128x128 the two strongest JPEG2000 levels can coincide: the codestream header
(~270 bytes) is then larger than the byte budget of the requested compression ratio.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, features
from scipy import ndimage, signal
from skimage import color, draw, morphology, restoration, util

from .image_io import load_image_rgb

__all__ = [
    "DISTORTIONS",
    "DISTORTION_SPECS",
    "KADID_DISTORTION_NAMES",
    "NUM_LEVELS",
    "JPEG2000_NATIVE",
    "DistortionSpec",
    "distort",
    "list_distortions",
    "EXTRA_DISTORTION_SPECS",
    "EXTRA_DISTORTIONS",
    "list_extra_distortions",
    "apply_distortion",
]

NUM_LEVELS = 5
JPEG2000_NATIVE: bool = bool(features.check("jpg_2000"))
_REF_AREA = 512 * 384  # KADID-10k image size: counts of patches/blocks are relative to it

DistortionFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class DistortionSpec:
    """One distortion type: its KADID-10k id, category, parameter name and the 5 level values."""

    name: str
    kadid_id: int
    category: str
    parameter: str
    levels: tuple[float, ...]
    impl: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


DISTORTION_SPECS: dict[str, DistortionSpec] = {}


def _register(name: str, kadid_id: int, category: str, parameter: str, levels: tuple[float, ...]):
    def deco(fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]):
        if len(levels) != NUM_LEVELS:
            raise ValueError(f"{name}: expected {NUM_LEVELS} level values")
        DISTORTION_SPECS[name] = DistortionSpec(name, kadid_id, category, parameter, tuple(levels), fn)
        return fn

    return deco


# ---------------------------------------------------------------------------- helpers (float [0, 1])


def _to_float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float64) / 255.0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(_to_uint8(x), mode="RGB")


def _from_pil(image: Image.Image) -> np.ndarray:
    return _to_float(np.asarray(image.convert("RGB")))


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Same-size 2-D convolution of every channel with symmetric border extension (FFT based)."""
    kh, kw = kernel.shape
    pad = ((kh // 2, kh - 1 - kh // 2), (kw // 2, kw - 1 - kw // 2), (0, 0))
    padded = np.pad(x, pad, mode="symmetric")
    return signal.fftconvolve(padded, kernel[:, :, None], mode="valid", axes=(0, 1))


def _area_scale(x: np.ndarray) -> float:
    return x.shape[0] * x.shape[1] / _REF_AREA


def _lab_apply(x: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    with warnings.catch_warnings():  # out-of-gamut Lab values are clipped on the way back
        warnings.simplefilter("ignore")
        return np.clip(color.lab2rgb(fn(color.rgb2lab(x))), 0.0, 1.0)


# ---------------------------------------------------------------------------- blur


@_register("gaussian_blur", 1, "blur", "sigma (px)", (0.5, 1.0, 2.0, 3.0, 5.0))
def _gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), mode="reflect")


@_register("lens_blur", 2, "blur", "disk radius (px)", (1, 2, 4, 6, 8))
def _lens_blur(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    kernel = morphology.disk(int(radius)).astype(np.float64)
    return _convolve(x, kernel / kernel.sum())


@_register("motion_blur", 3, "blur", "kernel length (px)", (3, 5, 9, 13, 19))
def _motion_blur(x: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, np.pi)  # same direction at every level for a given seed
    size = int(length) | 1
    c, half = size // 2, (size - 1) / 2.0
    dy, dx = half * np.sin(angle), half * np.cos(angle)
    kernel = np.zeros((size, size))
    rr, cc, val = draw.line_aa(int(round(c - dy)), int(round(c - dx)), int(round(c + dy)), int(round(c + dx)))
    ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
    np.maximum.at(kernel, (rr[ok], cc[ok]), val[ok])
    return _convolve(x, kernel / kernel.sum())


# ---------------------------------------------------------------------------- colour


@_register("color_diffusion", 4, "color", "chroma blur sigma (px)", (1, 3, 6, 8, 12))
def _color_diffusion(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    def fn(lab: np.ndarray) -> np.ndarray:
        lab[..., 1:] = ndimage.gaussian_filter(lab[..., 1:], sigma=(sigma, sigma, 0), mode="reflect")
        return lab

    return _lab_apply(x, fn)


@_register("color_shift", 5, "color", "green-channel shift (px)", (1, 2, 4, 6, 9))
def _color_shift(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, 2 * np.pi)
    out = x.copy()
    shift = (amount * np.sin(angle), amount * np.cos(angle))
    out[..., 1] = ndimage.shift(x[..., 1], shift, order=1, mode="nearest")
    return out


@_register("color_quantization", 6, "color", "palette size", (64, 48, 32, 16, 8))
def _color_quantization(x: np.ndarray, colors: float, rng: np.random.Generator) -> np.ndarray:
    quantized = _pil(x).quantize(
        colors=int(colors), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
    )
    return _from_pil(quantized)


@_register("color_saturation_decrease", 7, "color", "Lab chroma factor", (0.6, 0.4, 0.2, 0.1, 0.0))
def _saturation_decrease(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    def fn(lab: np.ndarray) -> np.ndarray:
        lab[..., 1:] *= factor
        return lab

    return _lab_apply(x, fn)


@_register("color_saturation_increase", 8, "color", "Lab chroma factor", (1.5, 2.0, 3.0, 4.5, 6.0))
def _saturation_increase(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    return _saturation_decrease(x, factor, rng)


# ---------------------------------------------------------------------------- compression


def _jpeg2000_fallback(x: np.ndarray, ratio: float) -> np.ndarray:
    if not getattr(_jpeg2000_fallback, "warned", False):
        warnings.warn(
            "Pillow has no JPEG2000 (OpenJPEG) support: 'jpeg2000' uses a low-pass approximation",
            RuntimeWarning,
            stacklevel=3,
        )
        _jpeg2000_fallback.warned = True  # type: ignore[attr-defined]
    image = _pil(x)
    factor = float(np.sqrt(ratio / 4.0))
    small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    return _from_pil(image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.BICUBIC))


@_register("jpeg2000", 9, "compression", "compression ratio", (16, 32, 64, 128, 256))
def _jpeg2000(x: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    if not JPEG2000_NATIVE:
        return _jpeg2000_fallback(x, ratio)
    buf = io.BytesIO()
    _pil(x).save(
        buf, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)], irreversible=True
    )
    buf.seek(0)
    with Image.open(buf) as decoded:
        return _from_pil(decoded)


@_register("jpeg", 10, "compression", "JPEG quality", (43, 36, 24, 7, 2))
def _jpeg(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    buf = io.BytesIO()
    _pil(x).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return _from_pil(decoded)


# ---------------------------------------------------------------------------- noise


@_register("white_noise", 11, "noise", "Gaussian variance", (0.001, 0.002, 0.003, 0.005, 0.01))
def _white_noise(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    return util.random_noise(x, mode="gaussian", var=var, rng=rng, clip=True)


@_register("white_noise_color", 12, "noise", "chroma noise variance", (0.001, 0.002, 0.004, 0.007, 0.012))
def _white_noise_color(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    ycc = color.rgb2ycbcr(x)  # Y in [16, 235], Cb/Cr in [16, 240]
    sigma = np.sqrt(var) * 255.0
    noise = rng.standard_normal(x.shape) * sigma * np.array([0.25, 1.0, 1.0])  # mostly chromatic
    return np.clip(color.ycbcr2rgb(ycc + noise), 0.0, 1.0)


@_register("impulse_noise", 13, "noise", "salt & pepper density", (0.01, 0.03, 0.05, 0.1, 0.2))
def _impulse_noise(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    return util.random_noise(x, mode="s&p", amount=amount, rng=rng)


@_register("multiplicative_noise", 14, "noise", "speckle variance", (0.001, 0.005, 0.01, 0.02, 0.05))
def _multiplicative_noise(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    return util.random_noise(x, mode="speckle", var=var, rng=rng, clip=True)


@_register("denoise", 15, "noise", "noise variance before TV denoising", (0.002, 0.004, 0.007, 0.012, 0.02))
def _denoise(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    # KADID denoises white noise with DnCNN; total-variation denoising (Chambolle 2004) stands in here.
    noisy = util.random_noise(x, mode="gaussian", var=var, rng=rng, clip=True)
    return restoration.denoise_tv_chambolle(noisy, weight=1.2 * np.sqrt(var), channel_axis=-1)


# ---------------------------------------------------------------------------- brightness change


@_register("brighten", 16, "brightness", "lightness gamma", (1.3, 1.6, 2.0, 2.6, 3.4))
def _brighten(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    def fn(lab: np.ndarray) -> np.ndarray:
        lab[..., 0] = 100.0 * (1.0 - (1.0 - np.clip(lab[..., 0], 0, 100) / 100.0) ** gamma)
        return lab

    return _lab_apply(x, fn)


@_register("darken", 17, "brightness", "lightness gamma", (1.3, 1.6, 2.0, 2.6, 3.4))
def _darken(x: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    def fn(lab: np.ndarray) -> np.ndarray:
        lab[..., 0] = 100.0 * (np.clip(lab[..., 0], 0, 100) / 100.0) ** gamma
        return lab

    return _lab_apply(x, fn)


@_register("mean_shift", 18, "brightness", "intensity offset", (0.06, 0.12, 0.18, 0.24, 0.3))
def _mean_shift(x: np.ndarray, offset: float, rng: np.random.Generator) -> np.ndarray:
    direction = 1.0 if x.mean() < 0.5 else -1.0  # towards the side with more head-room
    return np.clip(x + direction * offset, 0.0, 1.0)


# ---------------------------------------------------------------------------- spatial


@_register("jitter", 19, "spatial", "max displacement (px)", (1, 2, 3, 4, 6))
def _jitter(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    u = rng.uniform(-1.0, 1.0, size=(2, h, w))
    yy = np.clip(np.arange(h)[:, None] + np.rint(u[0] * amount).astype(int), 0, h - 1)
    xx = np.clip(np.arange(w)[None, :] + np.rint(u[1] * amount).astype(int), 0, w - 1)
    return x[yy, xx]


def _random_boxes(
    x: np.ndarray, count: float, levels: tuple[float, ...], size_at_ref: int, rng: np.random.Generator
):
    """Nested random boxes: the first ``n`` of a fixed sequence (the same for every level).

    ``n`` is ``count`` scaled by the image area, but at least the level's rank (1..5), so that even
    a thumbnail gets strictly more boxes at each level.
    """
    h, w = x.shape[:2]
    scale = _area_scale(x)
    size = int(np.clip(round(size_at_ref * np.sqrt(scale)), 2, max(2, min(h, w) // 3)))
    rank = levels.index(count) + 1
    total = max(len(levels), int(round(levels[-1] * scale)))
    n = max(rank, int(round(count * scale)))
    ys = rng.integers(0, max(1, h - size + 1), size=total)
    xs = rng.integers(0, max(1, w - size + 1), size=total)
    return size, ys[:n], xs[:n], rng


@_register("non_eccentricity_patch", 20, "spatial", "patches per 512x384", (20, 40, 60, 80, 100))
def _non_eccentricity_patch(x: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[:2]
    size, ys, xs, rng = _random_boxes(x, count, DISTORTION_SPECS["non_eccentricity_patch"].levels, 16, rng)
    offsets = rng.integers(-size, size + 1, size=(max(NUM_LEVELS, int(round(100 * _area_scale(x)))), 2))
    offsets[np.all(offsets == 0, axis=1)] = size  # never copy a patch onto itself
    out = x.copy()
    for (y, xx), (oy, ox) in zip(zip(ys, xs), offsets):
        sy, sx = int(np.clip(y + oy, 0, h - size)), int(np.clip(xx + ox, 0, w - size))
        out[y : y + size, xx : xx + size] = x[sy : sy + size, sx : sx + size]
    return out


@_register("pixelate", 21, "spatial", "block size (px)", (2, 3, 5, 8, 12))
def _pixelate(x: np.ndarray, block: float, rng: np.random.Generator) -> np.ndarray:
    image = _pil(x)
    small = (max(1, round(image.width / block)), max(1, round(image.height / block)))
    return _from_pil(image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.NEAREST))


@_register("quantization", 22, "spatial", "levels per channel", (20, 15, 10, 6, 3))
def _quantization(x: np.ndarray, levels: float, rng: np.random.Generator) -> np.ndarray:
    n = int(levels)
    return np.rint(x * (n - 1)) / (n - 1)


@_register("color_block", 23, "spatial", "blocks per 512x384", (2, 4, 6, 8, 10))
def _color_block(x: np.ndarray, count: float, rng: np.random.Generator) -> np.ndarray:
    size, ys, xs, rng = _random_boxes(x, count, DISTORTION_SPECS["color_block"].levels, 32, rng)
    colours = rng.uniform(0.0, 1.0, size=(len(ys), 3))
    out = x.copy()
    for (y, xx), col in zip(zip(ys, xs), colours):
        out[y : y + size, xx : xx + size] = col
    return out


# ---------------------------------------------------------------------------- sharpness and contrast


@_register("high_sharpen", 24, "sharpness_contrast", "unsharp-mask amount", (1, 2, 3, 6, 12))
def _high_sharpen(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    # Unsharp masking x + amount * (x - G_sigma * x), the formula of skimage.filters.unsharp_mask, written
    # out with scipy because skimage 0.26's channel_axis path can leave uninitialised (NaN) pixels.
    blurred = ndimage.gaussian_filter(x, sigma=(2.0, 2.0, 0), mode="reflect")
    return np.clip(x + amount * (x - blurred), 0.0, 1.0)


@_register("contrast_change", 25, "sharpness_contrast", "contrast factor", (0.75, 0.6, 0.45, 0.3, 0.15))
def _contrast_change(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=(0, 1), keepdims=True)
    return np.clip(mean + factor * (x - mean), 0.0, 1.0)


# ---------------------------------------------------------------------------- public API

KADID_DISTORTION_NAMES: tuple[str, ...] = tuple(
    spec.name for spec in sorted(DISTORTION_SPECS.values(), key=lambda s: s.kadid_id)
)


def _check_level(level: int) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= NUM_LEVELS:
        raise ValueError(f"level must be an integer in 1..{NUM_LEVELS}, got {level!r}")
    return int(level)


def _check_name(name: str) -> DistortionSpec:
    if name in EXTRA_DISTORTION_SPECS:
        return EXTRA_DISTORTION_SPECS[name]
    if name not in DISTORTION_SPECS:
        raise ValueError(
            f"Unknown distortion {name!r}; available: {', '.join(KADID_DISTORTION_NAMES)}; "
            f"extra: {', '.join(EXTRA_DISTORTION_SPECS)}"
        )
    return DISTORTION_SPECS[name]


def _make_fn(spec: DistortionSpec) -> DistortionFn:
    def fn(img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
        """Apply to an HxWx3 uint8 array; returns an HxWx3 uint8 array of the same size."""
        if not (
            isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        ):
            raise TypeError(f"{spec.name}: expected an HxWx3 uint8 array, got {type(img).__name__}")
        out = spec.impl(_to_float(img), spec.levels[_check_level(level) - 1], rng)
        return _to_uint8(out)

    fn.__name__ = spec.name
    fn.__doc__ = (
        f"KADID-10k #{spec.kadid_id:02d} {spec.name} ({spec.category}); {spec.parameter} = {spec.levels}"
    )
    return fn


#: name -> function(img: HxWx3 uint8 array, level: 1..5, rng: np.random.Generator) -> uint8 array.
DISTORTIONS: dict[str, DistortionFn] = {
    name: _make_fn(DISTORTION_SPECS[name]) for name in KADID_DISTORTION_NAMES
}


def list_distortions() -> list[str]:
    """Names of all distortion types, in KADID-10k order."""
    return list(KADID_DISTORTION_NAMES)


def distort(image: Any, name: str, level: int, seed: int = 0) -> Any:
    """Apply distortion ``name`` at ``level`` (1 mildest .. 5 strongest) to ``image``.

    ``image`` may be a PIL image, a path or an array (anything :func:`load_image_rgb` accepts).
    Returns an RGB ``PIL.Image`` of the same size, or an HxWx3 uint8 array when given an array.
    Deterministic: the same (image, name, level, seed) always gives the same pixels.
    """
    spec = _check_name(name)
    level = _check_level(level)
    as_array = isinstance(image, np.ndarray)
    arr = np.asarray(load_image_rgb(image), dtype=np.uint8)
    if name in EXTRA_DISTORTIONS:
        rng = np.random.default_rng([int(seed), _EXTRA_STREAM_BASE + list(EXTRA_DISTORTIONS).index(name)])
        out = EXTRA_DISTORTIONS[name](arr, level, rng)
    else:
        rng = np.random.default_rng([int(seed), spec.kadid_id])
        out = DISTORTIONS[name](arr, level, rng)
    if out.shape != arr.shape:  # pragma: no cover - guarded by every implementation
        raise RuntimeError(f"{name} changed the image size from {arr.shape} to {out.shape}")
    return out if as_array else Image.fromarray(out, mode="RGB")


# ---------------------------------------------------------------------------- extra implementations
#
# Implementations beyond KADID-10k: other codecs, exposure in linear light, other saturation and contrast
# operators, other noise models. They are NOT part of the KADID registry above (``list_distortions`` and
# ``DISTORTIONS`` are unchanged); ``distort`` accepts their names. The SEAGULL ROI synthesis
# (``roi_synthesis.py``) mixes them with the KADID ones so that a model trained on its ROIs does not learn one
# implementation per distortion type. Same contract: 5 levels, level 1 mildest, PSNR falls with the level.

#: name -> spec of the extra implementations (``kadid_id`` is 0: they are not KADID-10k types).
EXTRA_DISTORTION_SPECS: dict[str, DistortionSpec] = {}
_EXTRA_STREAM_BASE = 1000  # random stream ids of the extras: 1000 + registration index (KADID uses 1..25)


def _register_extra(name: str, category: str, parameter: str, levels: tuple[float, ...]):
    def deco(fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]):
        if len(levels) != NUM_LEVELS or name in DISTORTION_SPECS or name in EXTRA_DISTORTION_SPECS:
            raise ValueError(f"{name}: expected {NUM_LEVELS} level values and a new name")
        EXTRA_DISTORTION_SPECS[name] = DistortionSpec(name, 0, category, parameter, tuple(levels), fn)
        return fn

    return deco


def _codec_roundtrip(x: np.ndarray, fmt: str, **options: Any) -> np.ndarray:
    buf = io.BytesIO()
    _pil(x).save(buf, format=fmt, **options)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return _from_pil(decoded)


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB transfer function (inverse)."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


@_register_extra("resample_blur", "blur", "down-sampling factor", (2.0, 3.0, 4.0, 6.0, 8.0))
def _resample_blur(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    # Resolution loss (area down-sampling, bicubic up-sampling): the blur of an up-scaled small image.
    image = _pil(x)
    small = (max(1, round(image.width / factor)), max(1, round(image.height / factor)))
    return _from_pil(image.resize(small, Image.Resampling.BOX).resize(image.size, Image.Resampling.BICUBIC))


@_register_extra("saturation_blend_decrease", "color", "blend factor with luma", (0.7, 0.5, 0.3, 0.15, 0.0))
def _saturation_blend_decrease(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    # PIL ImageEnhance.Color: a blend with the ITU-R 601 luma image (not a Lab chroma scaling).
    from PIL import ImageEnhance

    return _from_pil(ImageEnhance.Color(_pil(x)).enhance(float(factor)))


@_register_extra("saturation_blend_increase", "color", "blend factor with luma", (1.5, 2.0, 2.7, 3.5, 5.0))
def _saturation_blend_increase(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    return _saturation_blend_decrease(x, factor, rng)


@_register_extra("webp", "compression", "WebP quality", (40, 20, 10, 4, 0))
def _webp(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    return _codec_roundtrip(x, "WEBP", quality=int(quality), method=4)


@_register_extra("jpeg2000_psnr", "compression", "target PSNR (dB)", (37, 33, 30, 27, 24))
def _jpeg2000_psnr(x: np.ndarray, psnr: float, rng: np.random.Generator) -> np.ndarray:
    # JPEG 2000 at the rate that reaches a target PSNR (OpenJPEG's "dB" mode): unlike a fixed compression
    # ratio, the levels stay distinct on small images, where the codestream header dominates the budget.
    if not JPEG2000_NATIVE:
        raise RuntimeError(
            "'jpeg2000_psnr' needs Pillow built with OpenJPEG (PIL.features.check('jpg_2000'))"
        )
    return _codec_roundtrip(x, "JPEG2000", quality_mode="dB", quality_layers=[float(psnr)], irreversible=True)


@_register_extra("avif", "compression", "AVIF quality", (45, 30, 18, 8, 1))
def _avif(x: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    if not features.check("avif"):
        raise RuntimeError("'avif' needs Pillow built with AVIF support (PIL.features.check('avif'))")
    return _codec_roundtrip(x, "AVIF", quality=int(quality), speed=8)


@_register_extra("contrast_increase", "sharpness_contrast", "contrast factor", (1.3, 1.6, 2.0, 2.6, 3.4))
def _contrast_increase(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    return _contrast_change(x, factor, rng)


@_register_extra("contrast_sigmoid", "sharpness_contrast", "S-curve gain", (5.0, 7.0, 9.5, 13.0, 18.0))
def _contrast_sigmoid(x: np.ndarray, gain: float, rng: np.random.Generator) -> np.ndarray:
    # Tone S-curve with fixed end points: (s(x) - s(0)) / (s(1) - s(0)), s = logistic(gain * (x - 0.5)).
    def s(v):
        return 1.0 / (1.0 + np.exp(-gain * (v - 0.5)))

    return (s(x) - s(0.0)) / (s(1.0) - s(0.0))


@_register_extra(
    "contrast_blend_decrease", "sharpness_contrast", "blend factor", (0.7, 0.55, 0.4, 0.25, 0.12)
)
def _contrast_blend_decrease(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    # PIL ImageEnhance.Contrast: a blend with a flat grey at the mean luma (not a per-channel mean).
    from PIL import ImageEnhance

    return _from_pil(ImageEnhance.Contrast(_pil(x)).enhance(float(factor)))


@_register_extra("exposure_up", "brightness", "exposure change (EV, linear light)", (0.4, 0.8, 1.2, 1.7, 2.3))
def _exposure_up(x: np.ndarray, ev: float, rng: np.random.Generator) -> np.ndarray:
    # A camera-like exposure change: scale linear-light sRGB by 2^EV, clip highlights, re-encode.
    return _linear_to_srgb(_srgb_to_linear(x) * 2.0**ev)


@_register_extra(
    "exposure_down", "brightness", "exposure change (EV, linear light)", (-0.6, -1.1, -1.7, -2.4, -3.2)
)
def _exposure_down(x: np.ndarray, ev: float, rng: np.random.Generator) -> np.ndarray:
    return _exposure_up(x, ev, rng)


@_register_extra("poisson_noise", "noise", "photons at white", (400, 150, 60, 25, 10))
def _poisson_noise(x: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    # Shot noise: photon counts ~ Poisson(peak * linear intensity), per channel.
    lin = _srgb_to_linear(x)
    return _linear_to_srgb(rng.poisson(lin * peak) / peak)


@_register_extra("correlated_noise", "noise", "noise std", (0.025, 0.04, 0.06, 0.09, 0.13))
def _correlated_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    # Spatially correlated (low-pass, sigma 0.8 px) Gaussian noise, as left by demosaicing and denoising.
    field = ndimage.gaussian_filter(rng.standard_normal(x.shape), sigma=(0.8, 0.8, 0))
    field /= max(float(field.std()), 1e-12)
    return np.clip(x + std * field, 0.0, 1.0)


def _make_extra_fn(spec: DistortionSpec) -> DistortionFn:
    fn = _make_fn(spec)
    fn.__doc__ = f"extra {spec.name} ({spec.category}); {spec.parameter} = {spec.levels}"
    return fn


#: name -> function(img: HxWx3 uint8 array, level: 1..5, rng) -> uint8 array, for the extra implementations.
EXTRA_DISTORTIONS: dict[str, DistortionFn] = {
    name: _make_extra_fn(spec) for name, spec in EXTRA_DISTORTION_SPECS.items()
}


def list_extra_distortions() -> list[str]:
    """Names of the extra (non-KADID) implementations, in registration order."""
    return list(EXTRA_DISTORTION_SPECS)


def apply_distortion(image: np.ndarray, name: str, parameter: float, seed: int = 0) -> np.ndarray:
    """Apply implementation ``name`` (KADID or extra) with an explicit ``parameter`` value.

    ``distort`` takes one of the 5 tabulated levels; this takes the parameter itself (in the unit of
    ``spec.parameter``, e.g. a blur sigma or a JPEG quality), for callers with their own level tables
    such as the SEAGULL ROI synthesis. ``image`` is an HxWx3 uint8 array; returns one of the same shape.
    The random stream is the one :func:`distort` uses for ``(seed, name)``.
    """
    spec = _check_name(name)
    if not (
        isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    ):
        raise TypeError(f"{name}: expected an HxWx3 uint8 array, got {_describe_array(image)}")
    if not np.isfinite(float(parameter)):
        raise ValueError(f"{name}: parameter must be finite, got {parameter!r}")
    stream = (
        _EXTRA_STREAM_BASE + list(EXTRA_DISTORTIONS).index(name)
        if name in EXTRA_DISTORTIONS
        else spec.kadid_id
    )
    out = _to_uint8(spec.impl(_to_float(image), float(parameter), np.random.default_rng([int(seed), stream])))
    if out.shape != image.shape:  # pragma: no cover - guarded by every implementation
        raise RuntimeError(f"{name} changed the image size from {image.shape} to {out.shape}")
    return out


def _describe_array(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray {value.dtype} {tuple(value.shape)}"
    return type(value).__name__
