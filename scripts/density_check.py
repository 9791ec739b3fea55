#!/usr/bin/env python3
"""How precision holds when a collection is sparser than the benchmark: keep a fraction of the distractors.

    python scripts/density_check.py /tmp/q2_calib/truth.csv [--model sscd-distilled] [--thresholds 0.592,0.62]

The normalised score learns each image's background from the collection itself, so a collection with
fewer look-alikes corrects less. This keeps every original and derived copy and a deterministic
fraction (1, 1/2, 1/4, 1/10) of the distractors (hard negatives and document pages, chosen by a hash
of the path), scans each variant into a fresh catalog, and prints precision and recall of the
normalised score at the given thresholds, and the lowest thresholds reaching precision 0.99 / 0.995.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from embeddr.bench import read_truth  # noqa: E402
from embeddr.evaluate import score_benchmark  # noqa: E402
from embeddr.presets import get_preset  # noqa: E402


def kept(path: Path, fraction: float) -> bool:
    return int(hashlib.sha256(str(path).encode()).hexdigest()[:8], 16) / 2**32 < fraction


def lowest_threshold(score: np.ndarray, label: np.ndarray, target: float) -> float | None:
    order = np.argsort(-score)
    precision = np.cumsum(label[order]) / np.arange(1, len(score) + 1)
    ok = np.flatnonzero(precision >= target)
    return float(score[order][ok[-1]]) if len(ok) else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("truth")
    ap.add_argument("--model", default="sscd-distilled")
    ap.add_argument("--thresholds", default=None, help="comma-separated; default: the preset's")
    args = ap.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")] if args.thresholds else [get_preset(args.model).threshold.value]
    rows = read_truth(args.truth)
    print("| distractors kept | files | distractors | " + " | ".join(f"P / R at {t:g}" for t in thresholds)
          + " | lowest thr for P>=0.99 | for P>=0.995 |")
    print("|---|---:|---:|" + "---|" * len(thresholds) + "---|---|")
    for fraction in (1.0, 0.5, 0.25, 0.1):
        sub = [r for r in rows if r.role != "distractor" or kept(r.path, fraction)]
        ps = score_benchmark(args.truth, args.model, rows=sub)
        score, label = ps.scores("normalized"), ps.label
        cells = []
        for t in thresholds:
            sel = score >= t - 1e-6
            tp = int((label & sel).sum())
            cells.append(f"{tp / max(1, int(sel.sum())):.4f} / {tp / ps.n_positives:.4f}")
        lows = [lowest_threshold(score, label, p) for p in (0.99, 0.995)]
        print(f"| {fraction:g} | {len(sub)} | {sum(r.role == 'distractor' for r in sub)} | " + " | ".join(cells)
              + " | " + " | ".join("-" if x is None else f"{x:.3f}" for x in lows) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
