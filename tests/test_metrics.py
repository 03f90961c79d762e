"""IQA metrics against scipy, the VQEG logistic fit, degenerate inputs and the offline `evaluate` module."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from modeling_rsfiqa.quality_metrics import (
    METRIC_HIGHER_IS_BETTER,
    METRIC_NAMES,
    MetricWarning,
    compute_iqa_metrics,
    evaluate_metric_path,
    fit_logistic4,
    greater_is_better,
    logistic4,
    metric_nan_reason,
)

PRED = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2, 0.95, 0.5, 0.6, 0.05])
MOS = np.array([1.2, 2.9, 2.5, 4.1, 4.3, 1.9, 4.8, 3.0, 3.6, 1.0])


def _nonlinear_data(n: int = 80, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3, 3, n)
    mos = 1 + 4 / (1 + np.exp(-2.5 * x)) + rng.normal(0, 0.05, n)  # saturating monotone map
    return x, mos


def test_metrics_match_scipy_on_fixed_vectors():
    out = compute_iqa_metrics(PRED, MOS)
    assert set(out) == set(METRIC_NAMES)
    assert out["srcc"] == pytest.approx(stats.spearmanr(PRED, MOS)[0])
    assert out["krcc"] == pytest.approx(stats.kendalltau(PRED, MOS)[0])
    assert out["plcc"] == pytest.approx(stats.pearsonr(PRED, MOS)[0])
    _, mapping = fit_logistic4(PRED, MOS)
    fitted = mapping(PRED)
    assert out["plcc_logistic"] == pytest.approx(stats.pearsonr(fitted, MOS)[0])
    assert out["rmse"] == pytest.approx(np.sqrt(np.mean((fitted - MOS) ** 2)))
    raw = compute_iqa_metrics(PRED, MOS, rmse_after_fit=False)
    assert raw["rmse"] == pytest.approx(np.sqrt(np.mean((PRED - MOS) ** 2)))
    assert all(isinstance(v, float) for v in out.values())


def test_accepts_lists_and_torch_tensors():
    torch = pytest.importorskip("torch")
    a = compute_iqa_metrics(PRED.tolist(), MOS.tolist())
    b = compute_iqa_metrics(torch.tensor(PRED).view(-1, 1), torch.tensor(MOS))
    assert a == pytest.approx(b)


def test_logistic_fit_beats_raw_plcc_on_nonlinear_monotone_data():
    x, mos = _nonlinear_data()
    params, mapping = fit_logistic4(x, mos)
    assert params.shape == (4,) and np.all(np.isfinite(params))
    np.testing.assert_allclose(mapping(x), logistic4(x, *params))
    out = compute_iqa_metrics(x, mos)
    assert out["plcc_logistic"] > out["plcc"] + 0.02
    assert out["plcc_logistic"] > 0.99
    # the fit recovers the generating curve's range
    assert max(params[:2]) == pytest.approx(5.0, abs=0.15) and min(params[:2]) == pytest.approx(1.0, abs=0.15)


def test_logistic_fit_handles_decreasing_maps_and_large_offsets():
    x, mos = _nonlinear_data(seed=1)
    dmos_like = 1e4 - 300 * x  # negatively related, huge offset: standardisation keeps the fit stable
    out = compute_iqa_metrics(dmos_like, mos)
    assert out["srcc"] < -0.95 and out["plcc_logistic"] > 0.99 > abs(out["plcc"])


def test_constant_inputs_give_nan_with_reason():
    with pytest.warns(MetricWarning, match="predictions are constant"):
        out = compute_iqa_metrics([2.0] * 6, [1, 2, 3, 4, 5, 6])
    assert all(math.isnan(v) for v in out.values())
    with pytest.warns(MetricWarning, match="references are constant"):
        out = compute_iqa_metrics([1, 2, 3], [3.0, 3.0, 3.0])
    assert math.isnan(out["srcc"])
    assert "at least 2" in metric_nan_reason([1.0], [2.0])
    assert metric_nan_reason(PRED, MOS) is None
    with pytest.raises(ValueError, match="constant"):
        fit_logistic4([1, 1, 1, 1, 1], [1, 2, 3, 4, 5])


def test_nan_pairs_are_dropped():
    pred, mos = PRED.copy(), MOS.copy()
    pred[2], mos[5] = np.nan, np.inf
    with pytest.warns(MetricWarning, match="dropped 2"):
        out = compute_iqa_metrics(pred, mos)
    keep = np.ones(len(PRED), bool)
    keep[[2, 5]] = False
    assert out["srcc"] == pytest.approx(stats.spearmanr(PRED[keep], MOS[keep])[0])
    with pytest.warns(MetricWarning):
        out = compute_iqa_metrics([np.nan, np.nan], [1.0, 2.0])
    assert math.isnan(out["plcc"])


def test_few_points_fall_back_to_linear_map():
    with pytest.warns(MetricWarning, match="linear map"):
        params, mapping = fit_logistic4([1.0, 2.0, 3.0], [2.0, 4.0, 6.5])
    assert np.all(np.isnan(params))
    assert mapping(np.array([2.0]))[0] == pytest.approx(4.1666, abs=1e-3)


def test_length_mismatch_and_bad_types_raise():
    with pytest.raises(ValueError, match="differ in length"):
        compute_iqa_metrics([1, 2, 3], [1, 2])
    with pytest.raises(TypeError, match="numeric"):
        compute_iqa_metrics(["a", "b"], [1, 2])


def test_metric_directions():
    assert set(METRIC_HIGHER_IS_BETTER) == set(METRIC_NAMES)
    assert not greater_is_better("rmse") and greater_is_better("eval_srcc")
    assert sum(METRIC_HIGHER_IS_BETTER.values()) == len(METRIC_NAMES) - 1
    with pytest.raises(KeyError):
        greater_is_better("accuracy")


def test_evaluate_module_loads_offline_and_agrees(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    evaluate = pytest.importorskip("evaluate")
    from modeling_rsfiqa.quality_metrics import load_evaluate_metric

    x, mos = _nonlinear_data(n=40, seed=2)
    expected = compute_iqa_metrics(x.astype(np.float32), mos.astype(np.float32))
    metric = load_evaluate_metric()
    got = metric.compute(predictions=x.tolist(), references=mos.tolist())
    assert set(got) == set(METRIC_NAMES)
    for key in METRIC_NAMES:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6)
    # also by explicit path, with batches added incrementally
    metric = evaluate.load(evaluate_metric_path())
    for i in range(0, 40, 10):
        metric.add_batch(predictions=x[i : i + 10], references=mos[i : i + 10])
    assert metric.compute()["srcc"] == pytest.approx(expected["srcc"], rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        degenerate = metric.compute(predictions=[1.0, 1.0, 1.0], references=[1.0, 2.0, 3.0])
    assert math.isnan(degenerate["srcc"])
