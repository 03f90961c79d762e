"""SEAGULL's ROI metrics: SRCC/PLCC of quality and importance, sample-average P/R/F1 of types and severity,
checked against hand computation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from modeling_rsfiqa.quality_metrics import (
    ROI_METRIC_NAMES,
    SEAGULL_DISTORTION_TYPES,
    compute_roi_distortion_metrics,
    compute_roi_metrics,
    distortion_label_sets,
    greater_is_better,
    sample_average_prf,
    severity_level,
)


def test_sample_average_prf_by_hand():
    preds = [{"blur"}, {"blur", "noise"}, set(), {"noise"}, set()]
    refs = [{"blur"}, {"blur"}, {"contrast"}, set(), set()]
    # per sample (P, R, F1): (1, 1, 1), (1/2, 1, 2/3), (0, 0, 0), (0, 1, 0), (1, 1, 1)
    out = sample_average_prf(preds, refs)
    assert out["precision"] == pytest.approx((1 + 0.5 + 0 + 0 + 1) / 5)
    assert out["recall"] == pytest.approx((1 + 1 + 0 + 1 + 1) / 5)
    assert out["f1"] == pytest.approx((1 + 2 / 3 + 0 + 0 + 1) / 5)
    assert out["samples"] == 5
    # F1 per sample is the harmonic mean of that sample's P and R, not of the averages
    assert out["f1"] != pytest.approx(
        2 * out["precision"] * out["recall"] / (out["precision"] + out["recall"])
    )
    assert sample_average_prf([set()], [set()], empty_score=0.0) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "samples": 1,
    }
    # 2 of 3 right types, 1 wrong: P = 2/3, R = 2/3 (one missed), F1 = 2*2 / (3 + 3)
    one = sample_average_prf([["blur", "noise", "exposure"]], [("blur", "noise", "contrast")])
    assert one["precision"] == pytest.approx(2 / 3) and one["recall"] == pytest.approx(2 / 3)
    assert one["f1"] == pytest.approx(4 / 6)


def test_sample_average_prf_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        sample_average_prf([{"blur"}], [])
    with pytest.raises(ValueError, match="at least one"):
        sample_average_prf([], [])
    with pytest.raises(TypeError, match="bare string"):
        sample_average_prf(["blur"], [{"blur"}])


def test_severity_levels():
    assert [severity_level(s) for s in (0.2, 0.4, 0.6, 0.8, 1.0)] == [1, 2, 3, 4, 5]
    assert [severity_level(s) for s in (0.0, 0.05, 0.0999)] == [0, 0, 0]
    assert [severity_level(s) for s in (0.1, 0.3, 0.5, 0.7, 0.9, 1.3)] == [1, 2, 3, 4, 5, 5]  # ties round up
    assert severity_level(0.15, threshold=0.2) == 0 and severity_level(0.5, num_levels=3) == 2
    with pytest.raises(ValueError, match="finite"):
        severity_level(float("nan"))


def test_distortion_metrics_by_hand():
    preds = [{"blur": 0.8, "noise": 0.05}, {"exposure": 0.4, "contrast": 0.62}, {}]
    refs = [{"blur": 0.8}, {"exposure": 0.6}, {"noise": 0.2}]
    # levels: pred (blur 4), (exposure 2, contrast 3), (); ref (blur 4), (exposure 3), (noise 1)
    out = compute_roi_distortion_metrics(preds, refs)
    assert out["type_precision"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert out["type_recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert out["type_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert out["severity_precision"] == pytest.approx(1 / 3)  # only blur's level is right
    assert out["severity_recall"] == pytest.approx(1 / 3)
    assert out["severity_f1"] == pytest.approx(1 / 3)
    # all six types with near-zero severities (a regression head's output) = the same sets
    full = [{t: 0.01 for t in SEAGULL_DISTORTION_TYPES} | p for p in preds]
    assert compute_roi_distortion_metrics(full, refs) == out
    # integer values are levels; lists are types without severity
    assert distortion_label_sets({"blur": 3, "noise": 0.2}) == (
        {"blur", "noise"},
        {("blur", 3), ("noise", 1)},
    )
    assert distortion_label_sets(["blur", "noise"]) == ({"blur", "noise"}, set())
    assert distortion_label_sets({"blur": None}) == ({"blur"}, set())
    with pytest.raises(TypeError, match="string"):
        distortion_label_sets("blur")


def test_compute_roi_metrics_correlations_match_scipy():
    rng = np.random.default_rng(0)
    q_ref = rng.uniform(0, 100, 40)
    q_pred = q_ref + rng.normal(0, 15, 40)
    i_ref = rng.uniform(0, 100, 40)
    i_pred = np.sqrt(i_ref) + rng.normal(0, 0.5, 40)
    out = compute_roi_metrics(
        quality=(q_pred, q_ref),
        importance=(i_pred, i_ref),
        distortions=([{"blur": 0.6}], [{"blur": 0.6}]),
    )
    assert out["quality_srcc"] == pytest.approx(stats.spearmanr(q_pred, q_ref)[0])
    assert out["quality_plcc"] == pytest.approx(stats.pearsonr(q_pred, q_ref)[0])
    assert out["importance_srcc"] == pytest.approx(stats.spearmanr(i_pred, i_ref)[0])
    assert out["importance_plcc"] == pytest.approx(stats.pearsonr(i_pred, i_ref)[0])
    assert out["importance_plcc_logistic"] > out["importance_plcc"]  # sqrt is undone by the logistic fit
    assert out["type_f1"] == 1.0 and out["severity_f1"] == 1.0
    assert set(out) == set(ROI_METRIC_NAMES)
    assert compute_roi_metrics(quality=(q_pred, q_ref)).keys() == {
        "quality_srcc",
        "quality_plcc",
        "quality_plcc_logistic",
    }
    assert all(greater_is_better(f"eval_{name}") for name in ROI_METRIC_NAMES)


def test_distortion_types_agree_with_the_seagull_config():
    from modeling_rsfiqa.configuration_seagull import SEAGULL_DISTORTION_TYPES as CONFIG_TYPES
    from modeling_rsfiqa.roi_synthesis import SEAGULL_DISTORTION_TYPES as SYNTHESIS_TYPES

    assert tuple(CONFIG_TYPES) == SEAGULL_DISTORTION_TYPES == SYNTHESIS_TYPES
