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
from collections.abc import Callable, Sequence
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
    "severity_order_accuracy",
    "reference_split",
    "summarize_split_metrics",
    "SEAGULL_DISTORTION_TYPES",
    "ROI_METRIC_NAMES",
    "ROI_METRIC_HIGHER_IS_BETTER",
    "sample_average_prf",
    "severity_level",
    "distortion_label_sets",
    "compute_roi_distortion_metrics",
    "compute_roi_metrics",
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
    if name in ROI_METRIC_HIGHER_IS_BETTER:
        return ROI_METRIC_HIGHER_IS_BETTER[name]
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


def severity_order_accuracy(
    scores: Any, groups: Sequence[Any], levels: Any, higher_is_better: bool = True
) -> dict[str, float]:
    """Fraction of correctly ordered pairs by distortion severity (Q-CLIP issue target: >= 0.85 per type).

    Within each group (e.g. one source photo x one distortion type, with its pristine version as level 0),
    every pair of items with different ``levels`` counts; it is correct when the more severe item scores
    worse (lower if ``higher_is_better``). Ties in score count as half. Returns ``accuracy`` and ``pairs``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    levels = np.asarray(levels, dtype=np.float64)
    if not (len(scores) == len(levels) == len(groups)):
        raise ValueError("scores, groups and levels must have the same length")
    correct = total = 0.0
    by_group: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        by_group.setdefault(g, []).append(i)
    for idx in by_group.values():
        s, lv = scores[idx], levels[idx]
        ds = s[:, None] - s[None, :]
        dl = lv[:, None] - lv[None, :]
        mask = dl > 0  # item i more severe than item j
        if not higher_is_better:
            ds = -ds
        correct += float((ds[mask] < 0).sum() + 0.5 * (ds[mask] == 0).sum())
        total += float(mask.sum())
    return {"accuracy": correct / total if total else float("nan"), "pairs": int(total)}


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


# --------------------------------------------------------------------------- ROI metrics (SEAGULL)
#
# SEAGULL (Chen et al., arXiv 2411.10161) evaluates ROI quality and importance scores with SRCC / PLCC and
# the distortion analysis (which types, how severe) with sample-average precision / recall / F1, here
# defined as the multi-label "samples" average: for ROI i with predicted label set P_i and true set G_i,
#
#     precision_i = |P_i & G_i| / |P_i|,   recall_i = |P_i & G_i| / |G_i|,   F1_i = 2 |P_i & G_i| / (|P_i| + |G_i|)
#
# (F1_i is the harmonic mean of precision_i and recall_i, 0 when both are 0), each averaged over the ROIs.
# Empty sets: a ROI that is clean (G_i empty) and predicted clean (P_i empty) scores 1 on all three; an
# empty prediction for a distorted ROI has precision 0 (nothing right was said) and recall 0; a prediction
# for a clean ROI has precision 0 and recall 1 (nothing was missed) -- ``empty_score`` sets the value of
# the "both empty" case. For TYPES the labels are the distortion type names; for SEVERITY they are
# (type, severity level) pairs, so a type counts as right only when its severity level is right too.

#: The six SEAGULL distortion types (the reference's prompt order).
SEAGULL_DISTORTION_TYPES: tuple[str, ...] = (
    "blur",
    "colorfulness",
    "compression",
    "contrast",
    "exposure",
    "noise",
)

ROI_METRIC_NAMES: tuple[str, ...] = (
    "quality_srcc",
    "quality_plcc",
    "quality_plcc_logistic",
    "importance_srcc",
    "importance_plcc",
    "importance_plcc_logistic",
    "type_precision",
    "type_recall",
    "type_f1",
    "severity_precision",
    "severity_recall",
    "severity_f1",
)
#: Direction of every ROI metric (all are correlations or P/R/F1: higher is better).
ROI_METRIC_HIGHER_IS_BETTER: dict[str, bool] = dict.fromkeys(ROI_METRIC_NAMES, True)


def sample_average_prf(predictions: Any, references: Any, empty_score: float = 1.0) -> dict[str, float]:
    """Sample-average precision / recall / F1 of per-sample label sets (definitions above).

    ``predictions`` and ``references`` are sequences (one entry per sample) of iterables of hashable
    labels (type names, or (type, level) pairs). Returns ``{"precision", "recall", "f1", "samples"}``.
    """
    preds, refs = list(predictions), list(references)
    if len(preds) != len(refs):
        raise ValueError(f"predictions and references differ in length: {len(preds)} vs {len(refs)}")
    if not preds:
        raise ValueError("sample_average_prf needs at least one sample")
    precision = recall = f1 = 0.0
    for i, (p, g) in enumerate(zip(preds, refs)):
        if isinstance(p, (str, bytes)) or isinstance(g, (str, bytes)):
            raise TypeError(f"sample {i}: expected a collection of labels, got a bare string ({p!r}, {g!r})")
        p, g = set(p), set(g)
        hit = len(p & g)
        if not p and not g:
            precision, recall, f1 = precision + empty_score, recall + empty_score, f1 + empty_score
            continue
        precision += hit / len(p) if p else 0.0
        recall += hit / len(g) if g else 1.0
        f1 += 2.0 * hit / (len(p) + len(g))
    n = len(preds)
    return {"precision": precision / n, "recall": recall / n, "f1": f1 / n, "samples": n}


def severity_level(severity: float, num_levels: int = 5, threshold: float | None = None) -> int:
    """Discrete level 1..num_levels of a severity in [0, 1]; 0 = absent.

    Level k covers severities around k / num_levels: ``floor(severity * num_levels + 0.5)`` (ties
    round up) clipped to 1..num_levels. A severity below ``threshold`` (default: half of level 1, ``0.5 / num_levels``) is
    absent. Synthetic severities ``level / num_levels`` map back to their level exactly.
    """
    s = float(severity)
    if not np.isfinite(s):
        raise ValueError(f"severity must be finite, got {severity!r}")
    threshold = 0.5 / num_levels if threshold is None else threshold
    if s < threshold:
        return 0
    return int(min(num_levels, max(1, np.floor(s * num_levels + 0.5))))


def distortion_label_sets(
    distortions: Any, num_levels: int = 5, threshold: float | None = None
) -> tuple[set[str], set[tuple[str, int]]]:
    """``(types, (type, level) pairs)`` of one ROI, from ``{type: severity in [0, 1]}`` (all six types
    with near-0 for absent ones, as a regression head gives them, or only the present ones), from
    ``{type: level}`` with integer levels, or from a list of type names (no severity: level 0)."""
    if isinstance(distortions, dict):
        pairs = set()
        for name, value in distortions.items():
            if value is None:
                pairs.add((str(name), 0))
                continue
            is_level = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1
            level = int(value) if is_level else severity_level(value, num_levels, threshold)
            if level > 0:
                pairs.add((str(name), level))
        return {name for name, _ in pairs}, {p for p in pairs if p[1] > 0}
    if isinstance(distortions, (str, bytes)):
        raise TypeError(f"expected a dict or a list of distortion types, got the string {distortions!r}")
    types = {str(d) for d in distortions}
    return types, set()


def compute_roi_distortion_metrics(
    predictions: Any, references: Any, num_levels: int = 5, threshold: float | None = None
) -> dict[str, float]:
    """Type and severity sample-average precision / recall / F1 of per-ROI distortion predictions.

    Each entry is what :func:`distortion_label_sets` accepts (e.g. ``{"blur": 0.8, "noise": 0.05}``).
    Returns ``type_precision/recall/f1`` and ``severity_precision/recall/f1``.
    """
    preds = [distortion_label_sets(p, num_levels, threshold) for p in predictions]
    refs = [distortion_label_sets(r, num_levels, threshold) for r in references]
    types = sample_average_prf([p[0] for p in preds], [r[0] for r in refs])
    sev = sample_average_prf([p[1] for p in preds], [r[1] for r in refs])
    return {
        "type_precision": types["precision"],
        "type_recall": types["recall"],
        "type_f1": types["f1"],
        "severity_precision": sev["precision"],
        "severity_recall": sev["recall"],
        "severity_f1": sev["f1"],
    }


def compute_roi_metrics(
    quality: tuple[Any, Any] | None = None,
    importance: tuple[Any, Any] | None = None,
    distortions: tuple[Any, Any] | None = None,
    num_levels: int = 5,
    threshold: float | None = None,
) -> dict[str, float]:
    """The SEAGULL evaluation: each argument is a ``(predictions, references)`` pair, or None to skip.

    quality / importance -> ``<name>_srcc``, ``<name>_plcc`` (Pearson of the raw scores) and
    ``<name>_plcc_logistic`` (after the VQEG logistic fit; see :func:`compute_iqa_metrics`, whose nan
    rules apply); distortions -> :func:`compute_roi_distortion_metrics`.
    """
    out: dict[str, float] = {}
    for name, pair in (("quality", quality), ("importance", importance)):
        if pair is None:
            continue
        m = compute_iqa_metrics(*pair)
        out.update(
            {
                f"{name}_srcc": m["srcc"],
                f"{name}_plcc": m["plcc"],
                f"{name}_plcc_logistic": m["plcc_logistic"],
            }
        )
    if distortions is not None:
        out.update(compute_roi_distortion_metrics(*distortions, num_levels=num_levels, threshold=threshold))
    return out
