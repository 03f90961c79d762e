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
