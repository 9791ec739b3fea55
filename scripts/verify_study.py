#!/usr/bin/env python3
"""Choose the second look's settings (the preset's ``[verify]`` table) on calibration shapes only.

For every cell of a grid (``scripts/sweep_shapes.py``'s shapes, calibration split), the pairs scored in a wide
band around the threshold (default 0.42-0.80, normalised score, no second look) are looked at once with
:class:`embeddr.verify.Verifier` (key points and looks shared by all cells). Then a grid of rules is replayed
on those looks: a pair below the threshold is kept when the look confirms it (inliers, cells, aligned
correlation), a pair at or above it is dropped when the look refutes it (inliers, correlation), only inside
``[low, high)``. Printed: each rule's worst-cell precision and recall, its lowest family recall (the
``natural`` family, 1-15 pairs a cell, is left out of that minimum), mean precision and recall, and the
document false pairs; best first. Cells named with ``--leave-out`` (frames of one static-camera video: no
second look can part them) are reported but not used to choose.

    python scripts/verify_study.py --pool POOL/pool.csv --catalog POOL-sscd-distilled.db --model sscd-distilled

The settings shipped in models/sscd-distilled.toml were chosen on 2026-11-29 with the first version of this
study (the same looks and rules, on 8 calibration cells with the pool's vectors; docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "scripts"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import sweep_shapes as S  # noqa: E402

RULES = {  # (low, high, veto_inliers, veto_ncc, min_inliers, min_cells, min_ncc)
    "low": [0.45, 0.5, 0.55], "high": [0.65, 0.7, 0.8], "veto_inliers": [5, 10, 15, 20, 30],
    "veto_ncc": [0.0, 0.3, 0.5], "min_inliers": [30, 50], "min_cells": [4, 8], "min_ncc": [0.7, 0.8, 0.9],
}


def band_cell(rows, pool_db: Path, model: str, verifier, lo: float, hi: float) -> dict:
    from embeddr.catalog import Catalog
    from embeddr.dupes import find_duplicates
    from embeddr.encoders import resolve_preset

    preset = resolve_preset(model)
    row_of = {str(r.path): r for r in rows}
    with tempfile.TemporaryDirectory(prefix="embeddr_verify_") as tmp:
        db = S.cell_catalog(pool_db, list(row_of), Path(tmp) / "c.db")
        with Catalog(db) as catalog:
            report = find_duplicates(catalog, preset, threshold=lo, verify=False)
            hash_of = {f.path: f.hash for f in catalog.files("ok")}
    groups = defaultdict(list)
    for p, r in row_of.items():
        if r.group and p in hash_of:
            groups[r.group].append(p)
    positives = Counter(S.pair_family(row_of[x], row_of[y]) for ps in groups.values()
                        for i, x in enumerate(ps) for y in ps[i + 1:])
    pairs = []
    for p in report.pairs:
        ra, rb = row_of.get(p.a), row_of.get(p.b)
        if ra is None or rb is None:
            continue
        true = bool(ra.group) and ra.group == rb.group
        what = S.pair_family(ra, rb) if true else S.pair_kind(ra, rb)
        look = verifier.look(hash_of[p.a], hash_of[p.b]) if p.kind == "near" and p.score < hi else None
        pairs.append((p.score, true, what, look))
    return {"positives": positives, "pairs": pairs}


def replay(cell: dict, threshold: float, rule: tuple, verifier) -> dict:
    lo, hi, iv, nv, ir, cr, nr = rule
    tp, fp, found, false = 0, 0, Counter(), Counter()
    for score, true, what, look in cell["pairs"]:
        keep = score >= threshold - 1e-6
        if look is not None and lo - 1e-6 <= score < hi - 1e-6:
            if keep and (look.inliers < iv or look.ncc < nv):
                keep = False
            elif not keep and look.inliers >= ir and look.cells >= cr and look.ncc >= nr:
                keep = True
        if keep and true:
            tp, found[what] = tp + 1, found[what] + 1
        elif keep:
            fp, false[what] = fp + 1, false[what] + 1
    n = sum(cell["positives"].values())
    fams = {f: found[f] / k for f, k in cell["positives"].items() if f != "natural"}
    return {"precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / n if n else 1.0,
            "worst_family": min(fams.values()) if fams else 1.0, "doc_fp": false.get("doc", 0)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=Path, required=True)
    ap.add_argument("--catalog", type=Path, required=True, help="the pool's catalog for --model")
    ap.add_argument("--model", default="sscd-distilled")
    ap.add_argument("--grid", default="calib")
    ap.add_argument("--band", type=float, nargs=2, default=(0.42, 0.80))
    ap.add_argument("--leave-out", action="append", default=[], help="a cell reported but not used to choose")
    args = ap.parse_args(argv)
    from embeddr.bench.shapes import read_pool
    from embeddr.encoders import resolve_preset

    preset = resolve_preset(args.model)
    verifier = S.shared_verifier(args.catalog, preset)
    pool = read_pool(args.pool)
    cells = {}
    for shape in S.GRIDS[args.grid]:
        cells[shape.name] = band_cell(S.sample(pool, shape, "calib"), args.catalog, args.model, verifier, *args.band)
        print(f"{shape.name}: {len(cells[shape.name]['pairs'])} pairs >= {args.band[0]}", file=sys.stderr)
    chosen = {k: v for k, v in cells.items() if k not in args.leave_out}
    t = preset.threshold.value
    rows = []
    base = [replay(c, t, (t, t, 0, -9, 10**9, 99, 9), verifier) for c in chosen.values()]
    for rule in itertools.product(*RULES.values()):
        res = [replay(c, t, rule, verifier) for c in chosen.values()]
        rows.append((min(r["precision"] for r in res), min(r["recall"] for r in res),
                     min(r["worst_family"] for r in res), float(np.mean([r["precision"] for r in res])),
                     float(np.mean([r["recall"] for r in res])), sum(r["doc_fp"] for r in res), rule))
    rows.sort(key=lambda r: -(min(r[0] - 0.99, 0) * 10 + r[1] + r[2] - 0.002 * r[5]))
    print("score alone: worst P {:.4f} worst R {:.4f} worst family {:.4f} mean P {:.4f} mean R {:.4f} doc FP {}".format(
        min(r["precision"] for r in base), min(r["recall"] for r in base), min(r["worst_family"] for r in base),
        np.mean([r["precision"] for r in base]), np.mean([r["recall"] for r in base]), sum(r["doc_fp"] for r in base)))
    print("worst P | worst R | worst family | mean P | mean R | doc FP | (low, high, veto_inliers, veto_ncc, "
          "min_inliers, min_cells, min_ncc)")
    for r in rows[:15]:
        print(" | ".join(f"{x:.4f}" if isinstance(x, float) else str(x) for x in r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
