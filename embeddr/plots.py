"""Plots for eval and tune reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import pr_curve


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def pr_curves(pair_scores, path: str | Path, *, scores=("raw", "normalized"), mark: dict | None = None) -> Path:
    """Precision-recall curves: one colour per detector, solid = raw, dashed = normalised."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    for i, ps in enumerate(pair_scores):
        colour = f"C{i}"
        for name in scores:
            _, precision, recall = pr_curve(ps.label, ps.scores(name), ps.n_positives)
            ax.plot(recall, precision, color=colour, linestyle="-" if name == "raw" else "--",
                    label=f"{ps.detector} ({name})")
    for label, (r, p) in (mark or {}).items():
        ax.plot([r], [p], "ko")
        ax.annotate(label, (r, p), textcoords="offset points", xytext=(5, -12), fontsize=8)
    ax.axhline(0.99, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("recall (duplicate pairs found)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(max(0.0, ax.get_ylim()[0]), 1.005)
    ax.set_title("Precision-recall over pairs")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def histograms(pair_scores, path: str | Path, *, score: str | None = None, thresholds: dict | None = None) -> Path:
    """Per detector: histogram of duplicate vs non-duplicate (hard negative) scores, threshold marked."""
    plt = _plt()
    n = max(1, len(pair_scores))
    fig, axes = plt.subplots(n, 1, figsize=(7, 2.4 * n), dpi=110, squeeze=False)
    for ax, ps in zip(axes[:, 0], pair_scores):
        name = score or ps.preset.score
        s = ps.scores(name)
        finite = np.isfinite(s)
        bins = np.linspace(float(np.min(s[finite], initial=0.0)), 1.0, 60)
        ax.hist(s[finite & ps.label], bins=bins, alpha=0.6, color="C2", label="duplicate pairs")
        ax.hist(s[finite & ~ps.label], bins=bins, alpha=0.6, color="C3", label="nearest non-duplicates")
        t = (thresholds or {}).get(ps.detector, ps.preset.threshold.value)
        ax.axvline(t, color="k", linestyle="--", linewidth=1, label=f"threshold {t:.3g}")
        ax.set_yscale("log")
        ax.set_title(f"{ps.detector}: {name} score", fontsize=9)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("score")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
