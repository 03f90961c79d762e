"""KADID-10k-style distortion generator: registry, determinism, sizes and monotone severity."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data, metrics

from modeling_rsfiqa.distortions import (
    DISTORTION_SPECS,
    DISTORTIONS,
    KADID_DISTORTION_NAMES,
    NUM_LEVELS,
    distort,
    list_distortions,
    list_extra_distortions,
)


@pytest.fixture(scope="module")
def clean() -> np.ndarray:
    """A natural 128x128 photo (bundled with scikit-image): JPEG2000 needs >= ~128 px to stay monotone."""
    return np.asarray(Image.fromarray(data.astronaut()).resize((128, 128), Image.Resampling.LANCZOS))


def test_registry_covers_kadid_types():
    names = list_distortions()
    assert len(names) == 25 and names == list(KADID_DISTORTION_NAMES) == list(DISTORTIONS)
    assert [DISTORTION_SPECS[n].kadid_id for n in names] == list(range(1, 26))
    assert {"gaussian_blur", "jpeg", "jpeg2000", "white_noise", "pixelate", "contrast_change"} <= set(names)
    assert all(len(DISTORTION_SPECS[n].levels) == NUM_LEVELS for n in names)


@pytest.mark.parametrize("name", KADID_DISTORTION_NAMES)
def test_levels_are_monotone_in_psnr(clean, name):
    psnr = [metrics.peak_signal_noise_ratio(clean, distort(clean, name, lvl, seed=0)) for lvl in range(1, 6)]
    assert all(a > b for a, b in zip(psnr, psnr[1:])), f"{name}: PSNR per level {np.round(psnr, 2)}"
    assert psnr[0] < 60, f"{name}: level 1 leaves the image (almost) unchanged"


@pytest.mark.parametrize("name", ["gaussian_blur", "jpeg", "white_noise", "contrast_change"])
def test_levels_are_monotone_in_ssim(clean, name):
    ssim = [
        metrics.structural_similarity(clean, distort(clean, name, lvl), channel_axis=-1)
        for lvl in range(1, 6)
    ]
    assert all(a > b for a, b in zip(ssim, ssim[1:]))


def test_same_size_and_types_for_odd_sizes():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(23, 37, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    for name in KADID_DISTORTION_NAMES:
        out = distort(img, name, 5, seed=1)
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == img.shape, name
        out_pil = distort(pil, name, 3)
        assert isinstance(out_pil, Image.Image) and out_pil.mode == "RGB" and out_pil.size == pil.size, name
        assert DISTORTIONS[name](img, 2, np.random.default_rng(0)).shape == img.shape


def test_deterministic_for_a_seed(clean):
    for name in ("white_noise", "impulse_noise", "jitter", "color_block", "non_eccentricity_patch"):
        a, b = distort(clean, name, 3, seed=7), distort(clean, name, 3, seed=7)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, distort(clean, name, 3, seed=8)), name


def test_grayscale_and_rgba_inputs_become_rgb(tmp_path):
    gray = Image.new("L", (40, 30), 128)
    assert distort(gray, "jpeg", 2).mode == "RGB"
    path = tmp_path / "a.png"
    Image.new("RGBA", (40, 30), (10, 20, 30, 128)).save(path)
    assert distort(str(path), "pixelate", 4).size == (40, 30)


def test_bad_arguments_raise_clear_errors(clean):
    with pytest.raises(ValueError, match="Unknown distortion 'blurr'"):
        distort(clean, "blurr", 1)
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match="level must be an integer in 1..5"):
            distort(clean, "jpeg", bad)
    with pytest.raises(TypeError, match="uint8"):
        DISTORTIONS["jpeg"](clean.astype(np.float32), 1, np.random.default_rng(0))


def test_jpeg2000_fallback_without_openjpeg(clean, monkeypatch):
    from modeling_rsfiqa import distortions as d

    monkeypatch.setattr(d, "JPEG2000_NATIVE", False)
    monkeypatch.setattr(d._jpeg2000_fallback, "warned", False, raising=False)
    with pytest.warns(RuntimeWarning, match="JPEG2000"):
        first = distort(clean, "jpeg2000", 1)
    psnr = [metrics.peak_signal_noise_ratio(clean, distort(clean, "jpeg2000", lvl)) for lvl in range(2, 6)]
    psnr.insert(0, metrics.peak_signal_noise_ratio(clean, first))
    assert all(a > b for a, b in zip(psnr, psnr[1:])) and first.shape == clean.shape


# --------------------------------------------------------------------------- extra (non-KADID) implementations


def test_extra_implementations_stay_out_of_the_kadid_registry():
    from modeling_rsfiqa.distortions import EXTRA_DISTORTION_SPECS, EXTRA_DISTORTIONS, list_extra_distortions

    extras = list_extra_distortions()
    assert extras == list(EXTRA_DISTORTIONS) == list(EXTRA_DISTORTION_SPECS) and len(extras) >= 10
    assert not set(extras) & set(KADID_DISTORTION_NAMES) and len(list_distortions()) == 25
    assert all(EXTRA_DISTORTION_SPECS[n].kadid_id == 0 for n in extras)


@pytest.mark.parametrize("name", list_extra_distortions())
def test_extra_levels_are_monotone_in_psnr_and_match_apply_distortion(clean, name):
    from modeling_rsfiqa.distortions import EXTRA_DISTORTION_SPECS, apply_distortion

    outs = [distort(clean, name, lvl, seed=0) for lvl in range(1, 6)]
    psnr = [metrics.peak_signal_noise_ratio(clean, o) for o in outs]
    assert all(a > b for a, b in zip(psnr, psnr[1:])), f"{name}: PSNR per level {np.round(psnr, 2)}"
    assert psnr[0] < 60
    spec = EXTRA_DISTORTION_SPECS[name]
    np.testing.assert_array_equal(apply_distortion(clean, name, spec.levels[2], seed=0), outs[2])
    assert distort(Image.fromarray(clean), name, 1).size == (128, 128)


def test_apply_distortion_takes_any_parameter_and_checks_inputs(clean):
    from modeling_rsfiqa.distortions import apply_distortion

    np.testing.assert_array_equal(
        apply_distortion(clean, "jpeg", 24, seed=0), distort(clean, "jpeg", 3, seed=0)
    )
    mid = apply_distortion(clean, "gaussian_blur", 1.5)
    lo, hi = distort(clean, "gaussian_blur", 2), distort(clean, "gaussian_blur", 4)
    assert (
        metrics.peak_signal_noise_ratio(clean, lo)
        > metrics.peak_signal_noise_ratio(clean, mid)
        > metrics.peak_signal_noise_ratio(clean, hi)
    )
    with pytest.raises(ValueError, match="extra: .*webp"):
        apply_distortion(clean, "h265", 3)
    with pytest.raises(TypeError, match="uint8"):
        apply_distortion(clean.astype(np.float32), "jpeg", 30)
    with pytest.raises(ValueError, match="finite"):
        apply_distortion(clean, "jpeg", float("nan"))
