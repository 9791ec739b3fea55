"""Precision-recall arithmetic over scored pairs (no I/O): what eval, tune and the plots share."""

from __future__ import annotations

import numpy as np

TARGET_PRECISION = 0.99


def pr_curve(label: np.ndarray, score: np.ndarray, n_positives: int | None = None):
    """(thresholds, precision, recall) at every distinct score, from high to low."""
    n_pos = int(label.sum()) if n_positives is None else n_positives
    finite = np.isfinite(score)
    order = np.argsort(-score[finite], kind="stable")
    s = score[finite][order]
    y = label[finite][order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1] if len(s) else np.zeros(0, np.int64)
    thr, tp, fp = s[last], tp[last], fp[last]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(n_pos, 1)
    return thr, precision, recall


def average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def threshold_for_precision(label: np.ndarray, score: np.ndarray, target: float = TARGET_PRECISION,
                            n_positives: int | None = None) -> tuple[float | None, float, float]:
    """(lowest threshold whose precision >= target, its precision, its recall); (None, 0, 0) if none."""
    thr, precision, recall = pr_curve(label, score, n_positives)
    okay = np.flatnonzero(precision >= target)
    if not len(okay):
        return None, 0.0, 0.0
    # the best recall among thresholds that meet the target (recall grows as the threshold falls)
    i = okay[np.argmax(recall[okay])]
    return float(thr[i]), float(precision[i]), float(recall[i])
