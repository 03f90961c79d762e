"""Robust image decoding shared by the processor, the pipeline and the offline jobs.

Every image that enters rsfiqa passes through :func:`load_image_rgb`: file paths, ``PIL.Image``
objects and numpy arrays of any common layout become an 8-bit RGB ``PIL.Image`` with EXIF
orientation applied. Anything that cannot be decoded raises :class:`ImageLoadError`, which names
the offending file, so a batch job can report it and carry on with the others.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageLoadError", "load_image_rgb", "load_image_reduced", "image_content_hash", "describe_source"]


class ImageLoadError(ValueError):
    """An input could not be turned into an RGB image. ``source`` names the file (or the object)."""

    def __init__(self, source: str, reason: str):
        self.source = source
        self.reason = reason
        super().__init__(f"Cannot load image {source!r}: {reason}")


def describe_source(image: Any) -> str:
    """Short human-readable name of an image input, for error messages and reports."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    if isinstance(image, Image.Image):
        return getattr(image, "filename", "") or f"<PIL.Image {image.mode} {image.size[0]}x{image.size[1]}>"
    if isinstance(image, np.ndarray):
        return f"<ndarray {image.dtype} {tuple(image.shape)}>"
    return f"<{type(image).__name__}>"


def _array_to_uint8(arr: np.ndarray, source: str) -> np.ndarray:
    """Rescale an integer or float array to uint8 (16-bit and float images included)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        info_max = 65535 if arr.max(initial=0) > 255 else 255
        return np.clip(arr.astype(np.float64) * (255.0 / info_max), 0, 255).round().astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageLoadError(source, "array contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    raise ImageLoadError(source, f"unsupported array dtype {arr.dtype}")


def _array_to_pil(arr: np.ndarray, source: str) -> Image.Image:
    if arr.ndim == 2:
        return Image.fromarray(_array_to_uint8(arr, source), mode="L").convert("RGB")
    if arr.ndim != 3:
        raise ImageLoadError(source, f"expected an HxW or HxWxC array, got shape {tuple(arr.shape)}")
    if (
        arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] < min(arr.shape[1:])
    ):  # CHW
        arr = np.moveaxis(arr, 0, -1)
    channels = arr.shape[-1]
    if channels not in (1, 3, 4):
        raise ImageLoadError(source, f"expected 1, 3 or 4 channels, got shape {tuple(arr.shape)}")
    arr8 = _array_to_uint8(np.ascontiguousarray(arr), source)
    if channels == 1:
        return Image.fromarray(arr8[..., 0], mode="L").convert("RGB")
    if channels == 4:
        return _flatten_alpha(Image.fromarray(arr8, mode="RGBA"))
    return Image.fromarray(arr8, mode="RGB")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent pixels over white (what a viewer shows) instead of dropping alpha."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _pil_to_rgb(image: Image.Image, source: str) -> Image.Image:
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not lose the pixels
        pass
    if image.width < 1 or image.height < 1:
        raise ImageLoadError(source, f"empty image of size {image.size}")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_pil(np.asarray(image), source)
    if mode == "P":
        image = image.convert("RGBA") if "transparency" in image.info else image.convert("RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "RGBa"):
        return _flatten_alpha(image)
    return image.convert("RGB")


_SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def _load_file(path: str, source: str, min_side: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode the file at ``path`` -> (RGB image, full-resolution (width, height) after EXIF orientation).

    ``min_side``: a JPEG may be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, Pillow's draft
    mode; several times cheaper than a full decode) as long as both sides stay >= ``min_side``."""
    if not os.path.exists(path):
        raise ImageLoadError(source, "file does not exist")
    if os.path.isdir(path):
        raise ImageLoadError(source, "is a directory, not an image file")
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            try:
                orientation = int(opened.getexif().get(0x0112, 1))
            except Exception:  # broken EXIF: exif_transpose below ignores it too
                orientation = 1
            if orientation in _SWAPPED_ORIENTATIONS:
                width, height = height, width
            if min_side and opened.format == "JPEG" and min(width, height) >= 2 * min_side:
                opened.draft("RGB", (min_side, min_side))
            opened.load()  # force full decode: truncated files fail here, not later
            return _pil_to_rgb(opened, source).copy(), (width, height)
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageLoadError(
            source,
            f"{err} Raise the limit on purpose with `PIL.Image.MAX_IMAGE_PIXELS = N` (None disables the check) "
            "if the file is trusted.",
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageLoadError(source, f"{type(err).__name__}: {err}") from err


def load_image_reduced(image: Any, min_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """:func:`load_image_rgb` for a model that sees the image at ``min_side`` pixels or less.

    A JPEG file at least twice that size on both sides is decoded at a reduced scale (1/2, 1/4 or 1/8, the
    largest that keeps both sides >= ``min_side``): a 12 MP photo for a 500 px model decodes at 1008x756 in a
    fraction of the time. Other inputs are decoded as :func:`load_image_rgb` does. Returns the image and the
    size (width, height) of the full-resolution image, EXIF orientation applied, for reporting coordinates.
    """
    if isinstance(image, (str, os.PathLike)):
        return _load_file(os.fspath(image), describe_source(image), int(min_side))
    rgb = load_image_rgb(image)
    return rgb, rgb.size


def load_image_rgb(image: Any) -> Image.Image:
    """Decode ``image`` (path, PIL image or numpy array) into a fully loaded 8-bit RGB PIL image.

    Raises:
        ImageLoadError: the file is missing, truncated, not an image, too large (Pillow's decompression-bomb
            limit, ``PIL.Image.MAX_IMAGE_PIXELS``), or the array has an odd shape. The message names the file.
    """
    source = describe_source(image)
    if isinstance(image, (str, os.PathLike)):
        return _load_file(os.fspath(image), source)[0]
    if isinstance(image, Image.Image):
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageLoadError(source, f"{type(err).__name__}: {err}") from err
        return _pil_to_rgb(image, source)
    if isinstance(image, np.ndarray):
        return _array_to_pil(image, source)
    try:  # torch tensors (C,H,W) or (H,W,C) without importing torch here
        arr = image.detach().cpu().numpy()
    except AttributeError:
        raise ImageLoadError(source, "expected a file path, a PIL.Image or a numpy array") from None
    return _array_to_pil(arr, source)


def image_content_hash(image: Image.Image) -> str:
    """SHA-256 of the decoded RGB pixels and size: the cache key of an image's content."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    digest = hashlib.sha256()
    digest.update(f"{rgb.width}x{rgb.height}".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()
