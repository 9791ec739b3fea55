"""Replay the normalisation's k and copy ceiling on scored benchmarks (calibration and hold-out).

Threshold chosen on the calibration split (lowest with precision >= 0.995), then applied to the
hold-out split. Needs the catalogs that `embeddr eval ... --out DIR` leaves in DIR/work/.

    python scripts/sweep_ceiling.py --calib /tmp/q_calib/truth.csv --calib-db /tmp/q_eval_calib/work/sscd-distilled.db \
        --holdout /tmp/q_holdout/truth.csv --holdout-db /tmp/q_eval_hold/work/sscd-distilled.db
"""

from __future__ import annotations

import argparse

import numpy as np

from embeddr.evaluate import score_benchmark
from embeddr.normalize import kth_background, normalize_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sscd-distilled")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--calib-db", required=True)
    ap.add_argument("--holdout", required=True)
    ap.add_argument("--holdout-db", required=True)
    ap.add_argument("--target", type=float, default=0.995)
    args = ap.parse_args()
    splits = {"calib": score_benchmark(args.calib, args.model, db=args.calib_db),
              "holdout": score_benchmark(args.holdout, args.model, db=args.holdout_db)}
    print("| k | ceiling | threshold (calib) | calib P / R | hold-out P / R | hold-out doc-page false pairs |")
    print("|---|---|---|---|---|---|")
    for k in (5, 8):
        for ceiling in (0.85, 0.9, 0.95, float("inf")):
            cells, threshold = [], None
            for name, ps in splits.items():
                bg = kth_background(ps.knn_scores, k, ceiling)
                s = normalize_scores(ps.raw, bg[ps.a], bg[ps.b])
                if threshold is None:
                    order = np.argsort(-s)
                    precision = np.cumsum(ps.label[order]) / np.arange(1, len(s) + 1)
                    threshold = float(s[order][np.flatnonzero(precision >= args.target)[-1]])
                sel = s >= threshold - 1e-6
                p = (ps.label & sel).sum() / max(1, sel.sum())
                r = (ps.label & sel).sum() / ps.n_positives
                cells.append(f"{p:.4f} / {r:.4f}")
                docs = int(((~ps.label) & sel & (np.array(ps.family) == "doc_page")).sum())
            print(f"| {k} | {ceiling} | {threshold:.3f} | {cells[0]} | {cells[1]} | {docs} |")


if __name__ == "__main__":
    main()
