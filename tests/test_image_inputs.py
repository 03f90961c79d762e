"""Every kind of image input becomes RGB; bad inputs raise a typed error naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modeling_rsfiqa.image_io import ImageLoadError, image_content_hash, load_image_rgb


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
