#!/usr/bin/env python3
"""Calibrate presets on the CALIBRATION split: normalisation parameters and default thresholds.

    python scripts/make_realimages_bench.py --split calib --out /tmp/q_calib
    python scripts/calibrate.py /tmp/q_calib/truth.csv --work /tmp/q_calib_work --models sscd-distilled,sscd,phash,dhash --sweep

For each model: scans the benchmark (catalog kept under --work, so re-runs reuse the vectors), then

* ``--sweep``: for the normalised score, a grid of (k, beta, floor, combine) with AP and the recall at
  precision >= --precision on this split (combine = max or mean of the two backgrounds);
* the threshold rule: the LOWEST threshold whose precision on this split is >= --precision (default
  0.995, margin over the 0.99 target) for the raw and the normalised score, with the precision and
  recall it gives. These numbers go into models/<name>.toml as ``[threshold]`` value + provenance.

Never run it on the hold-out split: that one is for reporting only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from embeddr.evaluate import average_precision, metrics_at, pr_curve, score_benchmark, threshold_for_precision  # noqa: E402


def norm_scores(ps, k, beta, floor, combine):
    bg = ps.background(k)
    ba, bb = bg[ps.a], bg[ps.b]
    b = np.maximum(ba, bb) if combine == "max" else (ba + bb) / 2
    return ps.raw - beta * np.maximum(0.0, b - floor)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("truth", type=Path)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--models", default="sscd-distilled,phash,dhash")
    ap.add_argument("--precision", type=float, default=0.995)
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        ps = score_benchmark(args.truth, name, db=args.work / f"{name}.db", k=30, workers=2)
        print(f"== {name}: {len(ps.rows)} files, {ps.n_positives} positive pairs, {int((~ps.label).sum())} negatives")
        if args.sweep:
            print("k beta floor combine | AP | recall@P>=%.3f (thr) | doc false pairs at that thr" % args.precision)
            rows = []
            for k in (5, 10, 20):
                for beta in (0.5, 1.0, 1.5, 2.0):
                    for floor in (0.2, 0.3, 0.4, 0.5, 0.6):
                        for combine in ("max", "mean"):
                            s = norm_scores(ps, k, beta, floor, combine)
                            _, p, r = pr_curve(ps.label, s, ps.n_positives)
                            t, pp, rr = threshold_for_precision(ps.label, s, args.precision, ps.n_positives)
                            rows.append((rr, average_precision(p, r), k, beta, floor, combine, t))
            rows.sort(key=lambda x: (-x[0], -x[1]))
            for rr, apv, k, beta, floor, combine, t in rows[:15]:
                print(f"{k:>2} {beta:.1f} {floor:.1f} {combine:<4} | {apv:.4f} | {rr:.4f} ({t})")
        for score in ("raw", "normalized"):
            s = ps.scores(score)
            t, p, r = threshold_for_precision(ps.label, s, args.precision, ps.n_positives)
            _, pc, rc = pr_curve(ps.label, s, ps.n_positives)
            line = f"{name} {score}: AP {average_precision(pc, rc):.4f}; lowest threshold with precision >= {args.precision}: "
            if t is None:
                print(line + "none")
                continue
            m = metrics_at(ps, s, t)
            print(line + f"{t:.4f} -> precision {m['precision']}, recall {m['recall']}, false pairs {m['false_pairs']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
