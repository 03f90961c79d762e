"""IQA evaluation metrics: SRCC, KRCC, PLCC (raw and after a 4-parameter logistic fit) and RMSE.

The nonlinear mapping follows the VQEG FR-TV Phase II report (2003) and Sheikh et al., "A statistical
evaluation of recent full reference image quality assessment algorithms", IEEE TIP 2006: before PLCC
and RMSE, predictions are mapped to the MOS scale by the monotonic 4-parameter logistic

    Q(x) = (b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2

(``b4 < 0`` gives a decreasing map, e.g. for predictions of DMOS against MOS). All rank/linear
statistics come from :mod:`scipy.stats`, the fit from :func:`scipy.optimize.curve_fit`.

Degenerate inputs never raise from :func:`compute_iqa_metrics`: pairs with a NaN/inf on either side
are dropped, and a metric that is undefined (fewer than two pairs, constant predictions or constant
references) is returned as ``nan`` together with a :class:`MetricWarning` stating why.

This module only uses relative imports (it is copied as Hub remote code).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import optimize, stats

__all__ = [
    "METRIC_NAMES",
    "METRIC_HIGHER_IS_BETTER",
    "MetricWarning",
    "greater_is_better",
    "logistic4",
    "fit_logistic4",
    "compute_iqa_metrics",
    "metric_nan_reason",
    "evaluate_metric_path",
    "load_evaluate_metric",
    "VQA_METRIC_NAMES",
    "TEN_SPLIT_SEEDS",
    "zscore_rescale",
    "compute_vqa_metrics",
    "reference_split",
    "summarize_split_metrics",
]

METRIC_NAMES: tuple[str, ...] = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")

#: Direction of every metric: ``True`` when a higher value means a better model.
METRIC_HIGHER_IS_BETTER: dict[str, bool] = {
    "srcc": True,
    "plcc": True,
    "plcc_logistic": True,
    "krcc": True,
    "rmse": False,
}

_MIN_POINTS_LOGISTIC = 5  # 4 parameters + 1 degree of freedom; below that we fall back to a linear map


class MetricWarning(UserWarning):
    """A metric is undefined (returned as nan) or a fit fell back to a simpler model; the message says why."""


def greater_is_better(metric: str) -> bool:
    """Direction of ``metric`` (e.g. for ``TrainingArguments.greater_is_better``); accepts ``eval_`` prefixes."""
    name = metric.removeprefix("eval_")
    if name not in METRIC_HIGHER_IS_BETTER:
        raise KeyError(f"Unknown metric {metric!r}; known: {sorted(METRIC_HIGHER_IS_BETTER)}")
    return METRIC_HIGHER_IS_BETTER[name]


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """VQEG 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / b4)) + b2``."""
    z = np.clip(-(np.asarray(x, dtype=np.float64) - b3) / b4, -500.0, 500.0)  # no overflow warnings
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def _as_1d(values: Any, name: str) -> np.ndarray:
    """Flatten a list / numpy array / torch tensor into a float64 vector."""
    if hasattr(values, "detach"):  # torch.Tensor without importing torch
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numeric, got {type(values).__name__}: {err}") from err
    return arr.reshape(-1)


def _paired_finite(predictions: Any, references: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """Vectors with the non-finite pairs removed, and how many pairs were dropped."""
    pred, ref = _as_1d(predictions, "predictions"), _as_1d(references, "references")
    if pred.shape != ref.shape:
        raise ValueError(f"predictions and references differ in length: {pred.size} vs {ref.size}")
    keep = np.isfinite(pred) & np.isfinite(ref)
    return pred[keep], ref[keep], int(pred.size - keep.sum())


def _degenerate_reason(pred: np.ndarray, ref: np.ndarray) -> str | None:
    if pred.size < 2:
        return f"need at least 2 finite (prediction, reference) pairs, got {pred.size}"
    if np.ptp(pred) == 0:
        return f"predictions are constant ({float(pred[0])!r}): correlation is undefined"
    if np.ptp(ref) == 0:
        return f"references are constant ({float(ref[0])!r}): correlation is undefined"
    return None


def metric_nan_reason(predictions: Any, references: Any) -> str | None:
    """Why correlation metrics would be nan for these inputs, or ``None`` when they are well defined."""
    pred, ref, _ = _paired_finite(predictions, references)
    return _degenerate_reason(pred, ref)


def fit_logistic4(
    pred: Any, mos: Any, maxfev: int = 20000
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Fit the VQEG 4-parameter logistic mapping ``pred -> mos``.

    Returns ``(params, mapping)`` where ``params = [b1, b2, b3, b4]`` on the scale of ``pred`` and
    ``mapping(x) = logistic4(x, *params)``. The fit runs on standardised predictions with the
    usual initial guess (``b1 = max(mos)``, ``b2 = min(mos)``, ``b3 = mean``, ``|b4| = std`` with the
    sign of the correlation), retrying from other slopes if it does not converge. With fewer than
    5 finite points, or when no fit converges, a least-squares LINEAR map is returned instead
    (``params`` all nan) and a :class:`MetricWarning` says so.

    Raises:
        ValueError: on fewer than 2 finite pairs, or constant ``pred`` / ``mos`` (nothing to fit).
    """
    x, y, _ = _paired_finite(pred, mos)
    reason = _degenerate_reason(x, y)
    if reason is not None:
        raise ValueError(f"fit_logistic4: {reason}")
    mu, sd = float(x.mean()), float(x.std())
    z = (x - mu) / sd
    sign = 1.0 if stats.pearsonr(z, y)[0] >= 0 else -1.0

    if x.size >= _MIN_POINTS_LOGISTIC:
        for slope in (1.0, 0.3, 3.0):
            p0 = [float(y.max()), float(y.min()), 0.0, sign * slope]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optimize.OptimizeWarning)
                    popt, _ = optimize.curve_fit(logistic4, z, y, p0=p0, maxfev=maxfev)
            except (RuntimeError, ValueError, FloatingPointError):
                continue
            if np.all(np.isfinite(popt)) and popt[3] != 0:
                b1, b2, b3, b4 = (float(v) for v in popt)
                params = np.array([b1, b2, mu + sd * b3, sd * b4])
                return params, lambda v, _p=params: logistic4(v, *_p)
        why = "the logistic fit did not converge"
    else:
        why = f"only {x.size} points (< {_MIN_POINTS_LOGISTIC}) for a 4-parameter fit"
    warnings.warn(f"fit_logistic4: {why}; using a linear map instead", MetricWarning, stacklevel=2)
    slope, intercept = np.polyfit(x, y, 1)
    return np.full(4, np.nan), lambda v, _a=float(slope), _b=float(intercept): _a * np.asarray(v, float) + _b


def compute_iqa_metrics(predictions: Any, references: Any, rmse_after_fit: bool = True) -> dict[str, float]:
    """SRCC, PLCC, PLCC after the logistic fit, KRCC (tau-b) and RMSE of ``predictions`` against MOS.

    ``rmse`` is computed after the logistic mapping (VQEG convention, so predictions on any scale
    are comparable); pass ``rmse_after_fit=False`` for the RMSE of the raw predictions. Non-finite
    pairs are dropped (with a :class:`MetricWarning`); undefined metrics are ``nan`` with a
    :class:`MetricWarning` giving the reason. Directions: :data:`METRIC_HIGHER_IS_BETTER`.
    """
    pred, ref, dropped = _paired_finite(predictions, references)
    if dropped:
        warnings.warn(f"dropped {dropped} pair(s) with NaN/inf values", MetricWarning, stacklevel=2)
    out = dict.fromkeys(METRIC_NAMES, float("nan"))
    if pred.size >= 1 and not rmse_after_fit:
        out["rmse"] = float(np.sqrt(np.mean((pred - ref) ** 2)))
    reason = _degenerate_reason(pred, ref)
    if reason is not None:
        warnings.warn(f"IQA metrics are nan: {reason}", MetricWarning, stacklevel=2)
        return out
    out["srcc"] = float(stats.spearmanr(pred, ref)[0])
    out["krcc"] = float(stats.kendalltau(pred, ref)[0])
    out["plcc"] = float(stats.pearsonr(pred, ref)[0])
    _, mapping = fit_logistic4(pred, ref)
    fitted = mapping(pred)
    out["plcc_logistic"] = float(stats.pearsonr(fitted, ref)[0]) if np.ptp(fitted) > 0 else float("nan")
    if rmse_after_fit:
        out["rmse"] = float(np.sqrt(np.mean((fitted - ref) ** 2)))
    return out


def evaluate_metric_path() -> str:
    """Folder of the packaged ``evaluate`` metric module (``metrics/iqa_metrics/iqa_metrics.py``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics", "iqa_metrics")


def load_evaluate_metric(**kwargs: Any):
    """``evaluate.load`` of the packaged IQA metric by local path: works offline, no Hub access."""
    import evaluate

    path = evaluate_metric_path()
    if not os.path.isfile(os.path.join(path, "iqa_metrics.py")):
        raise FileNotFoundError(f"Packaged evaluate metric not found: {os.path.join(path, 'iqa_metrics.py')}")
    return evaluate.load(path, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# VQA evaluation protocol of the Q-CLIP reference code (train.py: rescale, then SRCC / PLCC / KRCC / RMSE)
# ----------------------------------------------------------------------------------------------------------
VQA_METRIC_NAMES: tuple[str, ...] = ("srcc", "plcc", "krcc", "rmse")


def zscore_rescale(predictions: Any, references: Any) -> np.ndarray:
    """The reference's linear rescale: z-score the predictions, then give them the references' mean and
    (population) std. Constant predictions map to the references' mean."""
    pred, ref = _as_1d(predictions, "predictions"), _as_1d(references, "references")
    sd = float(np.std(pred))
    if sd < 1e-8:
        return np.full_like(pred, float(np.mean(ref)))
    return (pred - np.mean(pred)) / sd * np.std(ref) + np.mean(ref)


def compute_vqa_metrics(predictions: Any, references: Any) -> dict[str, float]:
    """SRCC, PLCC, KRCC and RMSE after :func:`zscore_rescale` (the Q-CLIP reference evaluation).

    Rank metrics do not change under the rescale; PLCC equals the raw PLCC; RMSE is on the reference scale.
    Non-finite pairs are dropped (with a :class:`MetricWarning`); undefined correlations are ``nan``.
    """
    pred, ref, dropped = _paired_finite(predictions, references)
    if dropped:
        warnings.warn(f"dropped {dropped} pair(s) with NaN/inf values", MetricWarning, stacklevel=2)
    out = dict.fromkeys(VQA_METRIC_NAMES, float("nan"))
    if pred.size == 0:
        return out
    fitted = zscore_rescale(pred, ref)
    out["rmse"] = float(np.sqrt(np.mean((fitted - ref) ** 2)))
    reason = _degenerate_reason(pred, ref)
    if reason is not None:
        warnings.warn(f"VQA metrics are nan: {reason}", MetricWarning, stacklevel=2)
        return out
    out["srcc"] = float(stats.spearmanr(ref, fitted)[0])
    out["plcc"] = float(stats.pearsonr(ref, fitted)[0])
    out["krcc"] = float(stats.kendalltau(ref, fitted)[0])
    return out


def reference_split(num_items: int, seed: int, train_ratio: float = 0.8) -> tuple[list[int], list[int]]:
    """(train, test) indices exactly as the Q-CLIP reference splits a label file: ``random.Random(seed)``
    shuffles the rows, the first ``int(n * train_ratio)`` train, the rest test."""
    import random

    if not 0.0 < train_ratio < 1.0:
        raise ValueError(f"train_ratio must be in (0, 1), got {train_ratio}")
    order = list(range(num_items))
    random.Random(seed).shuffle(order)
    cut = int(num_items * train_ratio)
    return order[:cut], order[cut:]


#: the 10 seeds of the 10-split protocol (the reference's configs use seed 42; its README averages 10 seeds)
TEN_SPLIT_SEEDS: tuple[int, ...] = tuple(range(42, 52))


def summarize_split_metrics(per_split: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, std (population) and median of each metric over the splits of the 10-split protocol."""
    if not per_split:
        raise ValueError("no split results to summarise")
    names = [k for k in per_split[0] if all(k in r for r in per_split)]
    out = {}
    for name in names:
        values = np.asarray([float(r[name]) for r in per_split], dtype=np.float64)
        out[name] = {
            "mean": float(np.nanmean(values)),
            "std": float(np.nanstd(values)),
            "median": float(np.nanmedian(values)),
            "splits": int(np.isfinite(values).sum()),
        }
    return out
