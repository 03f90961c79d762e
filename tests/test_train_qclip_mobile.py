"""The pair masks of examples/train_qclip_mobile.py: the within photo x type severity pairs and one type's subset."""

from __future__ import annotations

import importlib.util
import sys

import torch
from conftest import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location(
        "train_qclip_mobile", ROOT / "examples" / "train_qclip_mobile.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rows():
    rows = []
    for photo in ("a", "b"):
        rows.append({"reference": photo, "distortion_type": "pristine", "distortion_level": 0})
        for t in ("h264", "white_noise"):
            for level in (1, 2):
                rows.append({"reference": photo, "distortion_type": t, "distortion_level": level})
    rows.append({"reference": None, "distortion_type": "authentic", "distortion_level": None})
    return rows


def test_type_pair_mask_keeps_one_type_and_the_pristine_clip_of_the_same_photo():
    script = load_script()
    rows = _rows()
    full = script.severity_pair_mask(rows)
    noise = script.type_pair_mask(rows, "white_noise")
    assert noise.shape == (len(rows), len(rows)) and bool((noise <= full).all())
    for i, j in zip(*torch.nonzero(noise, as_tuple=True)):
        a, b = rows[int(i)], rows[int(j)]
        assert a["reference"] == b["reference"] and i != j
        assert {a["distortion_type"], b["distortion_type"]} <= {"white_noise", "pristine"}
    # per photo: pristine + 2 noise levels -> 3 x 2 ordered pairs; h264 pairs and the authentic clip excluded
    assert int(noise.sum()) == 2 * 6
    assert int(full.sum()) == 2 * (
        5 * 4 - 2 * 2 * 2
    )  # 5 clips a photo, minus the h264 x noise pairs (both ways)


def test_severity_failures_counts_the_wrong_pairs_by_level_pair_and_photo():
    spec = importlib.util.spec_from_file_location(
        "qclip_severity_pairs", ROOT / "examples" / "qclip_severity_pairs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = _rows()
    # photo a: noise levels in order; photo b: level 2 scores above level 1 (one wrong pair); h264 ignored
    scores = {("a", 0): 1.0, ("a", 1): 0.5, ("a", 2): 0.2, ("b", 0): 1.0, ("b", 1): 0.3, ("b", 2): 0.4}
    values = [
        scores.get((r["reference"], r["distortion_level"]), 9.0) if r["distortion_type"] != "h264" else -9.0
        for r in rows
    ]
    res = module.severity_failures(rows, values, "white_noise")
    assert res["pairs"] == 6 and res["by_pair"] == {(1, 2): 1} and res["by_photo"] == {"b": 1}
    assert abs(res["accuracy"] - 5 / 6) < 1e-9 and abs(res["spread"]["a"] - 0.8) < 1e-9


def test_input_energy_ratios_rise_with_added_noise():
    spec = importlib.util.spec_from_file_location(
        "qclip_severity_pairs", ROOT / "examples" / "qclip_severity_pairs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    g = torch.Generator().manual_seed(0)
    clean = torch.linspace(0, 1, 32).repeat(2, 3, 32, 1)  # (T, C, H, W) smooth ramp
    pixels = {lv: clean + 0.02 * lv * torch.randn(clean.shape, generator=g) for lv in (0, 1, 2, 3)}
    ratios = module.input_energy_ratios(pixels)
    assert list(ratios) == [1, 2, 3] and ratios[1] > 1.0 and ratios[1] < ratios[2] < ratios[3]
