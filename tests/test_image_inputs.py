"""Every kind of image input becomes RGB; bad inputs raise a typed error naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modeling_rsfiqa.image_io import ImageLoadError, image_content_hash, load_image_reduced, load_image_rgb


@pytest.fixture
def rgb_array():
    return (np.arange(12 * 16 * 3) % 251).astype(np.uint8).reshape(12, 16, 3)


def test_modes_are_converted(tmp_path, rgb_array):
    gray = Image.fromarray(rgb_array[..., 0], mode="L")
    rgba = Image.fromarray(np.dstack([rgb_array, np.full((12, 16), 128, np.uint8)]), mode="RGBA")
    palette = Image.fromarray(rgb_array).convert("P")
    sixteen = Image.fromarray(rgb_array[..., 0].astype(np.uint16) * 257)  # mode I;16
    for image in (gray, rgba, palette, sixteen):
        out = load_image_rgb(image)
        assert out.mode == "RGB" and out.size == (16, 12)
    sixteen_path = tmp_path / "x16.png"
    sixteen.save(sixteen_path)
    assert np.allclose(np.asarray(load_image_rgb(sixteen_path))[..., 0], rgb_array[..., 0], atol=1)


def test_alpha_is_composited_over_white():
    transparent = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image_rgb(transparent)).min() == 255


def test_arrays_of_every_layout(rgb_array):
    assert load_image_rgb(rgb_array).size == (16, 12)
    assert load_image_rgb(np.moveaxis(rgb_array, -1, 0)).size == (16, 12)  # CHW
    assert load_image_rgb(rgb_array[..., 0]).size == (16, 12)  # HW
    assert load_image_rgb(rgb_array.astype(np.float32) / 255).size == (16, 12)  # float [0, 1]
    assert load_image_rgb(rgb_array.astype(np.uint16) * 257).size == (16, 12)  # 16-bit


def test_exif_orientation_is_applied(tmp_path, rgb_array):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    Image.fromarray(rgb_array).save(path, exif=exif)
    assert load_image_rgb(path).size == (12, 16)


@pytest.mark.parametrize(
    "make",
    [
        lambda p: p.write_bytes(b"not an image at all"),
        lambda p: p.write_bytes(b""),
        "truncated",
    ],
)
def test_bad_files_raise_typed_error_naming_the_file(tmp_path, rgb_array, make):
    path = tmp_path / "bad.jpg"
    if make == "truncated":
        Image.fromarray(rgb_array).resize((256, 256)).save(path, quality=95)
        path.write_bytes(path.read_bytes()[:400])
    else:
        make(path)
    with pytest.raises(ImageLoadError) as info:
        load_image_rgb(path)
    assert str(path) in str(info.value) and info.value.source == str(path)


def test_missing_file_directory_and_odd_arrays(tmp_path):
    with pytest.raises(ImageLoadError, match="does not exist"):
        load_image_rgb(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="directory"):
        load_image_rgb(tmp_path)
    with pytest.raises(ImageLoadError, match="channels"):
        load_image_rgb(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image_rgb(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(ImageLoadError):
        load_image_rgb(12345)


def test_content_hash_depends_on_pixels_only(tmp_path, rgb_array):
    a = load_image_rgb(rgb_array)
    path = tmp_path / "same.png"
    Image.fromarray(rgb_array).save(path)
    assert image_content_hash(a) == image_content_hash(load_image_rgb(path))
    changed = rgb_array.copy()
    changed[0, 0, 0] ^= 1
    assert image_content_hash(a) != image_content_hash(load_image_rgb(changed))


def _header_only_png(path, width: int, height: int) -> None:
    """A PNG that declares ``width x height`` pixels but carries none: Pillow refuses it from the header alone,
    so a decompression-bomb test needs no 900-megapixel image."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_decompression_bomb_names_the_file_and_the_limit(tmp_path):
    path = tmp_path / "bomb.png"
    _header_only_png(path, 30000, 30000)
    assert path.stat().st_size < 100
    with pytest.raises(ImageLoadError) as info:
        load_image_rgb(path)
    assert info.value.source == str(path) and str(path) in str(info.value)
    assert "MAX_IMAGE_PIXELS" in str(info.value)
    with pytest.raises(ImageLoadError, match="bomb.png"):
        load_image_reduced(path, 500)


def test_large_jpeg_is_decoded_at_reduced_scale(tmp_path, rgb_array):
    path = tmp_path / "large.jpg"
    Image.fromarray(rgb_array).resize((2100, 1600)).save(path, quality=90)
    image, size = load_image_reduced(path, 500)
    assert size == (2100, 1600) and image.size == (1050, 800) and image.mode == "RGB"  # 1/2: sides >= 500
    image, size = load_image_reduced(path, 250)
    assert size == (2100, 1600) and image.size == (525, 400)  # 1/4
    image, size = load_image_reduced(path, 1100)  # not twice the minimum: decoded in full
    assert image.size == size == (2100, 1600)
    full = np.asarray(load_image_rgb(path).resize((1050, 800), Image.BILINEAR, reducing_gap=2.0), np.float32)
    reduced = np.asarray(load_image_reduced(path, 500)[0], np.float32)
    assert np.abs(full - reduced).mean() < 2.0  # the same picture, filtered a little differently
    png = tmp_path / "large.png"  # only JPEG has a reduced decode
    Image.fromarray(rgb_array).resize((2100, 1600)).save(png)
    assert load_image_reduced(png, 500)[0].size == (2100, 1600)
    array = np.zeros((1600, 2100, 3), np.uint8)
    assert load_image_reduced(array, 500)[0].size == (2100, 1600)


def test_reduced_decode_reports_the_oriented_full_size(tmp_path, rgb_array):
    path = tmp_path / "rotated-large.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    Image.fromarray(rgb_array).resize((2100, 1600)).save(path, exif=exif)
    image, size = load_image_reduced(path, 500)
    assert size == (1600, 2100) and image.size == (800, 1050)
