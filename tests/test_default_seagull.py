"""The shipped small ROI model: pipeline("region-quality") with no model works offline, one result per ROI in
input order, deterministic, independent of the ROI order, and (with ../shared) a blurred ROI scores lower."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image
from transformers import pipeline

import modeling_rsfiqa
from modeling_rsfiqa.distortions import distort

pytestmark = pytest.mark.skipif(
    not (modeling_rsfiqa.DEFAULT_SEAGULL_DIR / "model.safetensors").is_file(),
    reason="small ROI model not shipped",
)
TYPES = {"blur", "colorfulness", "compression", "contrast", "exposure", "noise"}
BOXES = [[10, 10, 120, 100], [200, 150, 380, 300], [50, 200, 160, 290]]


@pytest.fixture(scope="module")
def rq():
    return pipeline("region-quality")  # no model argument: the packaged default, offline


def test_default_is_the_packaged_small_model(rq):
    assert str(modeling_rsfiqa.DEFAULT_SEAGULL_DIR) in str(rq.model.config._name_or_path)
    assert rq.model.config.model_type == "seagull_region" and not rq.generative
    size = sum(p.stat().st_size for p in modeling_rsfiqa.DEFAULT_SEAGULL_DIR.iterdir() if p.is_file())
    assert size <= 15 * 2**20


def test_one_result_per_roi_in_input_order(rq):
    image = Image.fromarray(skimage.data.coffee())
    out = rq(image, regions=BOXES)
    assert len(out) == len(BOXES)
    for box, r in zip(BOXES, out):
        assert r["box"] == box
        assert 0.0 <= r["quality"] <= 100.0 and 0.0 <= r["importance"] <= 100.0
        assert set(r["distortions"]) == TYPES and all(0.0 <= s <= 1.0 for s in r["distortions"].values())


def test_identical_input_same_scores_and_roi_order_does_not_matter(rq):
    image = Image.fromarray(skimage.data.coffee())
    a, b = rq(image, regions=BOXES), rq(image, regions=BOXES)
    assert a == b
    order = [2, 0, 1]
    shuffled = rq(image, regions=[BOXES[i] for i in order])
    for k, i in enumerate(order):
        assert shuffled[k]["quality"] == pytest.approx(a[i]["quality"], abs=1e-3)
        assert shuffled[k]["importance"] == pytest.approx(a[i]["importance"], abs=1e-3)


def test_blurred_roi_scores_lower_than_the_clean_one(rq, shared_dir):
    photo = Image.open(shared_dir / "data" / "pristine" / "kodak24" / "kodim23.png").convert("RGB")
    box = [128, 96, 384, 320]
    blurred = np.asarray(photo).copy()
    x0, y0, x1, y1 = box
    patch = distort(Image.fromarray(blurred[y0:y1, x0:x1]), "gaussian_blur", 5, seed=0)
    blurred[y0:y1, x0:x1] = np.asarray(patch)
    clean = rq(photo, regions=[box])[0]
    hurt = rq(Image.fromarray(blurred), regions=[box])[0]
    assert hurt["quality"] < clean["quality"], (clean, hurt)


def test_held_out_sweep_quality_falls_and_importance_grows(rq, shared_dir):
    """A small controlled sweep on a held-out Kodak photo (the full check is datasets_scripts/seagull_sweeps.py):
    one ROI per type at levels 1, 3, 5, and nested ROIs at level 4; pairs ordered like the labels."""
    from modeling_rsfiqa import roi_synthesis as rs
    from modeling_rsfiqa.roi_synthesis import pair_order_fraction

    photo = Image.open(shared_dir / "data" / "pristine" / "kodak24" / "kodim05.png").convert("RGB")
    photo = np.asarray(photo.resize((384, 256), Image.Resampling.LANCZOS))
    roi = rs.Roi(rs.box_mask(photo.shape[:2], (96, 64, 256, 192)), (96, 64, 256, 192), "box")
    nested = rs.nested_rois(photo.shape[:2], np.random.default_rng(0), (0.03, 0.1, 0.3), kind="blob")
    quality, importance, levels, groups, area_importance, areas, area_groups = [], [], [], [], [], [], []
    for t, kind in enumerate(sorted(TYPES)):
        impl = rs.ROI_DISTORTIONS[kind][t % len(rs.ROI_DISTORTIONS[kind])].name
        for sample in rs.sweep_roi_samples(photo, kind, impl, [roi], [1, 3, 5], seed=t):
            out = rq(Image.fromarray(sample.image), regions=[list(roi.box)])[0]
            quality.append(-out["quality"])
            importance.append(out["importance"])
            levels.append(sample.level)
            groups.append(kind)
        for r, sample in zip(nested, rs.sweep_roi_samples(photo, kind, impl, nested, [4], seed=t)):
            area_importance.append(rq(Image.fromarray(sample.image), regions=[r.mask])[0]["importance"])
            areas.append(r.area)
            area_groups.append(kind)
    severity_order, n = pair_order_fraction(quality, levels, groups)
    importance_order, _ = pair_order_fraction(importance, levels, groups)
    area_order, n_area = pair_order_fraction(area_importance, areas, area_groups)
    assert n == 18 and n_area == 18
    print(
        f"severity order {severity_order:.3f}, importance vs severity {importance_order:.3f}, vs area {area_order:.3f}"
    )
    assert severity_order >= 0.8 and importance_order >= 0.8 and area_order >= 0.8
