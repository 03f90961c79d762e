"""IQA metrics for `evaluate`: SRCC, PLCC (raw and after the VQEG 4-parameter logistic fit), KRCC, RMSE.

Load it offline by path: ``evaluate.load("<...>/modeling_rsfiqa/metrics/iqa_metrics")`` (or
``modeling_rsfiqa.quality_metrics.load_evaluate_metric()``). `evaluate` copies this file alone into
its module cache, so it is self-contained (scipy only, one import per line) and mirrors
``modeling_rsfiqa.quality_metrics.compute_iqa_metrics``; the test suite checks both give the same numbers.
"""

import warnings

import datasets
import evaluate
import numpy as np
from scipy import optimize, stats

_CITATION = """\
@techreport{vqeg2003,
  title = {Final Report from the Video Quality Experts Group on the Validation of Objective Models
           of Video Quality Assessment, Phase II},
  author = {{Video Quality Experts Group}},
  year = {2003}
}
@article{sheikh2006statistical,
  title = {A statistical evaluation of recent full reference image quality assessment algorithms},
  author = {Sheikh, Hamid R. and Sabir, Muhammad F. and Bovik, Alan C.},
  journal = {IEEE Transactions on Image Processing}, volume = {15}, number = {11}, year = {2006}
}
"""

_DESCRIPTION = """\
Standard image-quality-assessment agreement between predicted scores and mean opinion scores (MOS):
Spearman (srcc) and Kendall tau-b (krcc) rank correlations, Pearson correlation of the raw
predictions (plcc) and after the monotonic VQEG 4-parameter logistic mapping of predictions to MOS
(plcc_logistic), and the RMSE after that mapping (rmse). All are higher-is-better except rmse.
NaN/inf pairs are dropped; undefined metrics (constant inputs, < 2 pairs) are nan with a warning.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of float): predicted quality scores.
    references (list of float): ground-truth MOS (or DMOS: the correlation sign then flips).
    rmse_after_fit (bool, default True): RMSE of the logistic-mapped (True) or raw (False) predictions.
Returns:
    dict with float values for "srcc", "plcc", "plcc_logistic", "krcc", "rmse".
Examples:
    >>> metric = evaluate.load("path/to/metrics/iqa_metrics")
    >>> out = metric.compute(predictions=[1.0, 2.0, 3.0, 4.0], references=[1.5, 2.0, 3.5, 5.0])
    >>> round(out["srcc"], 3)
    1.0
"""

HIGHER_IS_BETTER = {"srcc": True, "plcc": True, "plcc_logistic": True, "krcc": True, "rmse": False}
_MIN_POINTS_LOGISTIC = 5


def _logistic4(x, b1, b2, b3, b4):
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / b4, -500.0, 500.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _fit_mapping(x, y):
    """Logistic mapping fitted on standardised x (linear fallback), as quality_metrics.fit_logistic4."""
    mu, sd = float(x.mean()), float(x.std())
    z = (x - mu) / sd
    sign = 1.0 if stats.pearsonr(z, y)[0] >= 0 else -1.0
    if x.size >= _MIN_POINTS_LOGISTIC:
        for slope in (1.0, 0.3, 3.0):
            p0 = [float(y.max()), float(y.min()), 0.0, sign * slope]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optimize.OptimizeWarning)
                    popt, _ = optimize.curve_fit(_logistic4, z, y, p0=p0, maxfev=20000)
            except (RuntimeError, ValueError, FloatingPointError):
                continue
            if np.all(np.isfinite(popt)) and popt[3] != 0:
                return _logistic4(z, *popt)
    warnings.warn("iqa_metrics: logistic fit unavailable; using a linear map", UserWarning, stacklevel=3)
    slope, intercept = np.polyfit(x, y, 1)
    return slope * x + intercept


def iqa_metrics(predictions, references, rmse_after_fit=True):
    """The metric dict (same semantics as modeling_rsfiqa.quality_metrics.compute_iqa_metrics)."""
    pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
    ref = np.asarray(references, dtype=np.float64).reshape(-1)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions and references differ in length: {pred.size} vs {ref.size}")
    keep = np.isfinite(pred) & np.isfinite(ref)
    if not keep.all():
        warnings.warn(f"dropped {int((~keep).sum())} pair(s) with NaN/inf values", UserWarning, stacklevel=2)
    pred, ref = pred[keep], ref[keep]
    out = dict.fromkeys(HIGHER_IS_BETTER, float("nan"))
    if pred.size >= 1 and not rmse_after_fit:
        out["rmse"] = float(np.sqrt(np.mean((pred - ref) ** 2)))
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(ref) == 0:
        warnings.warn(
            "IQA metrics are nan: fewer than 2 finite pairs or constant inputs", UserWarning, stacklevel=2
        )
        return out
    out["srcc"] = float(stats.spearmanr(pred, ref)[0])
    out["krcc"] = float(stats.kendalltau(pred, ref)[0])
    out["plcc"] = float(stats.pearsonr(pred, ref)[0])
    fitted = _fit_mapping(pred, ref)
    out["plcc_logistic"] = float(stats.pearsonr(fitted, ref)[0]) if np.ptp(fitted) > 0 else float("nan")
    if rmse_after_fit:
        out["rmse"] = float(np.sqrt(np.mean((fitted - ref) ** 2)))
    return out


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class IqaMetrics(evaluate.Metric):
    """SRCC / PLCC / PLCC-after-logistic / KRCC / RMSE between predicted scores and MOS."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("float32")}
            ),
            reference_urls=["https://www.its.bldrdoc.gov/vqeg/projects/frtv-phase-ii.aspx"],
        )

    def _compute(self, predictions, references, rmse_after_fit=True):
        return iqa_metrics(predictions, references, rmse_after_fit=rmse_after_fit)
