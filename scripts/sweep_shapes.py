#!/usr/bin/env python3
"""Run `embeddr dupes` with shipped defaults over a grid of collection shapes; one table and its worst cell.

    python scripts/build_pool.py --out /work/cache/pool                                   # once
    embeddr scan /work/cache/pool ../shared/data/realimages/images --db pool-sscd-distilled.db --model sscd-distilled
    python scripts/sweep_shapes.py --pool /work/cache/pool/pool.csv \\
        --catalog sscd-distilled=pool-sscd-distilled.db --catalog phash=pool-phash.db --split test --grid test

Each cell is a *shape* (embeddr/bench/shapes.py: renditions per picture, pictures, documents and their
lengths, crowds of look-alikes, natural renditions, collection size) sampled from the pool's split. For each
detector, a fresh catalog holds exactly the cell's files, with the vectors `embeddr scan` computed for the
pool (a file's vector does not depend on the collection), and the cell is scored by the same
`find_duplicates` that `embeddr dupes` runs (normalised score, blank pages, grouping), at the preset's
shipped threshold. Columns: precision and recall of the listed pairs, AP of the default score's ranking
(pairs down to score 0.3), false pairs by kind (doc: two pages of real documents, crowd: two look-alikes,
picture: two different photos), the family with the lowest recall, and the precision and recall of the groups
(every pair of two members of one group counted as found: what `apply` and the report act on; the no-chaining
rule can leave a picture's renditions in two groups although every listed pair is right).

``--calibrate`` (calibration split and grid only) prints, for the preset's ``[normalize]`` settings, the
lowest threshold at which the mean precision over the grid's cells is >= 0.995 (the shipped rule).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from embeddr.bench.shapes import Shape, read_pool, sample  # noqa: E402

ALL_CROWDS = {"stars": -1, "tuxpaint": -1, "gcompris": -1, "chessboard": -1}
# the calibration documents before the slide decks joined the pool: cells that predate them keep
# exactly the documents they sampled then
CALIB_DOCS = ("texlive-science-doc", "texlive-pictures-doc")
SLIDE_DOCS = "texlive-latex-extra-doc"  # its slide decks only (scripts/build_pool.py)
GRIDS = {
    # calibration shapes (calib split): the only ones any default was chosen on
    "calib": [
        Shape("r4 docs14 crowds", renditions=4, docs=14, crowds=ALL_CROWDS, doc_sets=CALIB_DOCS),
        Shape("r13 docs14", renditions=13, docs=14, crowds={"tuxpaint": -1}, doc_sets=CALIB_DOCS),
        Shape("r30 docs14", renditions=30, docs=14, pictures=52, doc_sets=CALIB_DOCS),
        Shape("r1-30 docs40 crowds", renditions=(1, 30), docs=40, crowds=ALL_CROWDS, doc_sets=CALIB_DOCS),
        Shape("r13 docs80 short", renditions=13, docs=80, doc_pages=(2, 8), doc_sets=CALIB_DOCS),
        Shape("r13 docs1", renditions=13, docs=1, pictures=30, doc_pages=(2, 12), doc_sets=CALIB_DOCS),
        Shape("r4 stars", renditions=4, crowds={"stars": -1}),
        Shape("small", renditions=4, pictures=10, docs=2, doc_pages=(2, 10), doc_sets=CALIB_DOCS),
        Shape("r13 docs14 crowds", renditions=13, docs=14, crowds=ALL_CROWDS, pictures=52, doc_sets=CALIB_DOCS),
        Shape("r13 docs14 crowds60", renditions=13, docs=14, crowds={k: 60 for k in ALL_CROWDS}, pictures=52, seed=1,
              doc_sets=CALIB_DOCS),
        Shape("r8 docs3 long", renditions=8, docs=3, doc_pages=(40, 82), doc_sets=CALIB_DOCS),
        Shape("r13 diagram docs14", renditions=13, docs=14, doc_sets=("texlive-pictures-doc",), pictures=52, seed=4),
        Shape("r4 diagram docs all", renditions=4, docs=1000, doc_sets=("texlive-pictures-doc",), pictures=52),
        Shape("wallpapers r12 docs14", renditions=12, docs=14, picture_sets=("wallpapers",), doc_sets=CALIB_DOCS),
        Shape("wallpapers r30", renditions=30, picture_sets=("wallpapers",)),
        Shape("wallpapers+photos r4 crowds", renditions=4, docs=14, crowds=ALL_CROWDS, pictures=80,
              picture_sets=("wallpapers", "images"), seed=5, doc_sets=CALIB_DOCS),
        # slide decks (beamer themes' demo talks), added 2026-11-30: slides that differ by one
        # overlay step, or show one talk in two themes, must stay apart where defaults are chosen
        Shape("r4 slides docs all", renditions=4, docs=1000, doc_sets=(SLIDE_DOCS,), pictures=52),
        Shape("r13 slides docs14", renditions=13, docs=14, doc_sets=(SLIDE_DOCS,), pictures=52, seed=6),
    ],
    # evaluation shapes (test split): never used to choose anything
    "test": [
        Shape("r1", renditions=1, docs=14, crowds=ALL_CROWDS),
        Shape("r4", renditions=4, docs=14, crowds=ALL_CROWDS),
        Shape("r8", renditions=8, docs=14, crowds=ALL_CROWDS),
        Shape("r12 (13 renditions)", renditions=12, docs=14, crowds=ALL_CROWDS, pictures=52),
        Shape("r20", renditions=20, docs=14, crowds=ALL_CROWDS, pictures=52),
        Shape("r30", renditions=30, docs=14, crowds=ALL_CROWDS, pictures=52),
        Shape("r1-30", renditions=(1, 30), docs=30, crowds=ALL_CROWDS),
        Shape("docs0", renditions=12, docs=0, pictures=52),
        Shape("docs1 short", renditions=12, docs=1, doc_pages=(2, 8), pictures=52),
        Shape("docs5 short", renditions=12, docs=5, doc_pages=(2, 8), pictures=52),
        Shape("docs60 short", renditions=12, docs=60, doc_pages=(2, 8), pictures=52),
        Shape("docs14 any", renditions=12, docs=14, doc_pages=(2, 82), pictures=52, seed=2),
        Shape("docs5 long", renditions=12, docs=5, doc_pages=(30, 82), pictures=52),
        Shape("docs all", renditions=4, docs=1000, pictures=52),
        Shape("crowd stars", renditions=4, crowds={"stars": -1}, pictures=52),
        Shape("crowd stamps", renditions=4, crowds={"tuxpaint": -1, "gcompris": -1}, pictures=52),
        Shape("size 50", renditions=4, pictures=8, docs=1, doc_pages=(2, 8)),
        Shape("size 200", renditions=4, pictures=20, docs=4, doc_pages=(2, 20), crowds={"stars": 40}),
        Shape("size all", renditions=30, docs=1000, crowds=ALL_CROWDS),
        # a document source looked at by nobody before the final run: chess, go, crossword, card-game manuals
        Shape("games docs all", renditions=12, docs=1000, doc_sets=("texlive-games",), pictures=52),
        Shape("games docs14", renditions=12, docs=14, doc_sets=("texlive-games",), pictures=52, seed=3),
        Shape("wallpapers r12 docs14", renditions=12, docs=14, picture_sets=("wallpapers",)),
        Shape("wallpapers r30", renditions=30, picture_sets=("wallpapers",)),
        Shape("wallpapers+photos r4 crowds", renditions=4, docs=14, crowds=ALL_CROWDS, pictures=80,
              picture_sets=("wallpapers", "images"), seed=5),
    ],
    # crowds reported apart (see docs/benchmarks.md): frames of videos
    "video": [
        Shape("video frames", renditions=4, pictures=52, crowds={"video_vtest": -1, "video_Megamind": -1}),
    ],
}


def cell_catalog(pool_db: Path, paths: list[str], out: Path) -> Path:
    """A catalog holding exactly ``paths`` (rows and vectors copied from the pool's catalog)."""
    from embeddr.catalog import Catalog

    with Catalog(out) as cat:  # creates the schema
        pass
    con = sqlite3.connect(out)
    con.execute("ATTACH DATABASE ? AS pool", (str(pool_db),))
    con.execute("CREATE TEMP TABLE want (path TEXT PRIMARY KEY)")
    con.executemany("INSERT OR IGNORE INTO want VALUES (?)", ((p,) for p in paths))
    cols = [r[1] for r in con.execute("PRAGMA main.table_info(files)")]
    pool_cols = {r[1] for r in con.execute("PRAGMA pool.table_info(files)")}
    cols = [c for c in cols if c in pool_cols]
    con.execute(f"INSERT INTO main.files ({','.join(cols)}) SELECT {','.join('f.' + c for c in cols)} "
                "FROM pool.files f JOIN want w ON w.path = f.path WHERE f.status = 'ok'")
    vcols = [r[1] for r in con.execute("PRAGMA main.table_info(vectors)")]
    con.execute(f"INSERT INTO main.vectors ({','.join(vcols)}) SELECT {','.join('v.' + c for c in vcols)} "
                "FROM pool.vectors v WHERE v.hash IN (SELECT hash FROM main.files)")
    for key in ("model", "dim"):
        row = con.execute("SELECT value FROM pool.meta WHERE key = ?", (key,)).fetchone()
        if row:
            con.execute("INSERT OR REPLACE INTO main.meta (key, value) VALUES (?, ?)", (key, row[0]))
    con.commit()
    con.close()
    return out


def pair_kind(ra, rb) -> str:
    if ra.kind == "doc" and rb.kind == "doc":
        return "doc"
    if "crowd" in (ra.kind, rb.kind):
        return "crowd"
    if "doc" in (ra.kind, rb.kind):
        return "doc"
    return "picture"


def pair_family(ra, rb) -> str:
    if ra.family in ("original",):
        return rb.family
    if rb.family in ("original",):
        return ra.family
    if "combo" in (ra.family, rb.family):
        return "combo"
    return min(ra.family, rb.family)


_VERIFIERS: dict = {}


def shared_verifier(pool_db: Path, preset):
    """One :class:`embeddr.verify.Verifier` per pool catalog for the whole sweep: the same content hash is the
    same file in every cell, so each image's key points and each pair's look are computed once."""
    from embeddr.catalog import Catalog
    from embeddr.verify import Verifier

    key = str(pool_db)
    if key not in _VERIFIERS:
        with Catalog(pool_db) as catalog:
            path_of = {}
            for f in catalog.files("ok"):
                path_of.setdefault(f.hash, f.path)
        _VERIFIERS[key] = Verifier(preset.verify, path_of.get, cache=6000)
    return _VERIFIERS[key]


def score_cell(rows, pool_db: Path, model: str, work: Path, threshold: float | None = None,
               verify: bool | None = None) -> dict:
    from embeddr.catalog import Catalog
    from embeddr.dupes import find_duplicates
    from embeddr.encoders import resolve_preset
    from embeddr.index import load_index, stored
    from embeddr.normalize import Scorer, decide

    db = cell_catalog(pool_db, [str(r.path) for r in rows], work / f"{model}.db")
    preset = resolve_preset(model)
    t0 = time.perf_counter()
    verifying = preset.verify.enabled if verify is None else verify
    verifier = shared_verifier(pool_db, preset) if verifying and not preset.is_hash else None
    with Catalog(db) as catalog:
        report = find_duplicates(catalog, preset, threshold=threshold, verify=verify, verifier=verifier)
        seconds = time.perf_counter() - t0
        present = {f.path: f.hash for f in catalog.files("ok")}
        # the default score's ranking, for AP (pairs down to 0.3; the rest count as missed)
        index = load_index(catalog)
        ids, vecs = stored(index)
        vid_hash = {v: h for h, v in catalog.live_vector_ids().items()}
        a, b, s, _ = decide(index, ids, vecs, 0.3, Scorer.for_preset(preset))
    row_of = {str(r.path): r for r in rows if str(r.path) in present}
    groups = defaultdict(list)
    for p, r in row_of.items():
        if r.group:
            groups[r.group].append(p)
    positives = {frozenset((x, y)): pair_family(row_of[x], row_of[y])
                 for ps in groups.values() for i, x in enumerate(ps) for y in ps[i + 1:]}
    same_bytes = defaultdict(list)  # files with identical bytes are duplicates whatever their labels say (two
    for p, r in row_of.items():  # pages a manual repeats, a stamp shipped twice): family "identical"
        same_bytes[present[p]].append(p)
    for ps in same_bytes.values():
        for i, x in enumerate(ps):
            for y in ps[i + 1:]:
                positives.setdefault(frozenset((x, y)), "identical")
    found, false = Counter(), Counter()
    tp = fp = 0
    worst_false = []
    for p in report.pairs:
        key = frozenset((p.a, p.b))
        if key in positives:
            tp += 1
            found[positives[key]] += 1
        elif p.a in row_of and p.b in row_of:
            fp += 1
            k = pair_kind(row_of[p.a], row_of[p.b])
            false[k] += 1
            if len(worst_false) < 5:
                worst_false.append((round(p.score, 3), Path(p.a).name, Path(p.b).name, k))
    fam_total = Counter(positives.values())
    fam_recall = {f: found[f] / n for f, n in fam_total.items()}
    # the groups (what `apply` and the report act on): every pair of two members of one group counts as found
    g_found, g_tp, g_fp = Counter(), 0, 0
    for g in report.groups:
        ms = [m.path for m in g.members if m.path in row_of]
        for i, x in enumerate(ms):
            for y in ms[i + 1:]:
                fam = positives.get(frozenset((x, y)))
                if fam is None:
                    g_fp += 1
                else:
                    g_tp += 1
                    g_found[fam] += 1
    # AP over content pairs expanded to files
    files_of = defaultdict(list)
    for p, h in present.items():
        if p in row_of:
            files_of[h].append(p)
    ranked = []
    for x, y, v in zip(a.tolist(), b.tolist(), s.tolist()):
        for fa in files_of.get(vid_hash.get(x), ()):
            for fb in files_of.get(vid_hash.get(y), ()):
                ranked.append((v, frozenset((fa, fb)) in positives))
    for fs in files_of.values():  # identical bytes: score 1
        ranked += [(1.0, frozenset((fs[i], fs[j])) in positives) for i in range(len(fs)) for j in range(i + 1, len(fs))]
    ranked.sort(key=lambda t: -t[0])
    hits = np.array([h for _, h in ranked], bool)
    prec = np.cumsum(hits) / np.arange(1, len(hits) + 1) if len(hits) else np.zeros(0)
    ap = float((prec * hits).sum() / max(len(positives), 1))
    n_pos = len(positives)
    return {"files": len(row_of), "positives": n_pos, "pairs": tp + fp, "tp": tp, "fp": fp,
            "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / n_pos if n_pos else 1.0, "ap": ap,
            "false": dict(false), "family_recall": fam_recall, "worst_false": worst_false,
            "group_precision": g_tp / (g_tp + g_fp) if g_tp + g_fp else 1.0,
            "group_recall": g_tp / n_pos if n_pos else 1.0, "group_false": g_fp,
            "group_family_recall": {f: g_found[f] / n for f, n in fam_total.items()},
            "threshold": report.threshold, "seconds": round(seconds, 2), "verify": report.extra.get("verify")}


def markdown(results: dict, detectors: list[str]) -> str:
    lines = []
    for det in detectors:
        lines += [f"#### {det}", "",
                  "| shape | files | dup pairs | precision | recall | AP | false pairs doc / crowd / picture | lowest family "
                  "| groups: precision / recall |",
                  "|---|---:|---:|---:|---:|---:|---|---|---|"]
        for name, res in results.items():
            r = res[det]
            fam = min(r["family_recall"].items(), key=lambda kv: kv[1]) if r["family_recall"] else ("-", 1.0)
            f = r["false"]
            lines.append(f"| {name} | {r['files']} | {r['positives']} | {r['precision']:.4f} | {r['recall']:.4f} | "
                         f"{r['ap']:.3f} | {f.get('doc', 0)} / {f.get('crowd', 0)} / {f.get('picture', 0)} | "
                         f"{fam[0]} {fam[1]:.3f} | {r['group_precision']:.4f} / {r['group_recall']:.4f} |")
        cells = list(results.values())
        wp = min(results.items(), key=lambda kv: kv[1][det]["precision"])
        wr = min(results.items(), key=lambda kv: kv[1][det]["recall"])
        fams = defaultdict(list)
        for res in cells:
            for f, v in res[det]["family_recall"].items():
                fams[f].append(v)
        wf = min(((f, min(v)) for f, v in fams.items()), key=lambda kv: kv[1]) if fams else ("-", 1.0)
        docs = sum(res[det]["false"].get("doc", 0) for res in cells)
        lines += ["", f"Worst cell: precision {wp[1][det]['precision']:.4f} ({wp[0]}), recall "
                      f"{wr[1][det]['recall']:.4f} ({wr[0]}); lowest family recall in any cell: {wf[0]} {wf[1]:.3f}; "
                      f"document false pairs over all cells: {docs}. Threshold {cells[0][det]['threshold']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=Path, required=True)
    ap.add_argument("--catalog", action="append", required=True, help="DETECTOR=POOL_CATALOG.db (repeatable)")
    ap.add_argument("--split", choices=["calib", "test"], default="test")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="test")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                    help="the second look at borderline pairs (default: the preset's [verify] table)")
    ap.add_argument("--cells", default=None,
                    help="only these cells of the grid, by name, separated by '|' (default: every cell)")
    args = ap.parse_args(argv)
    if args.calibrate and (args.split != "calib" or args.grid != "calib"):
        ap.error("--calibrate needs --split calib --grid calib")
    dets = dict(c.split("=", 1) for c in args.catalog)
    pool = read_pool(args.pool)
    shapes = GRIDS[args.grid]
    if args.cells:
        wanted = [c.strip() for c in args.cells.split("|") if c.strip()]
        unknown = sorted(set(wanted) - {s.name for s in shapes})
        if unknown:
            ap.error(f"no cell {', '.join(map(repr, unknown))} in grid {args.grid!r}; its cells: "
                     + " | ".join(s.name for s in shapes))
        shapes = [s for s in shapes if s.name in wanted]
    results: dict[str, dict] = {}
    for shape in shapes:
        rows = sample(pool, shape, args.split)
        results[shape.name] = {}
        for det, db in dets.items():
            with tempfile.TemporaryDirectory(prefix="embeddr_sweep_") as tmp:
                if args.calibrate:
                    results[shape.name][det] = calibrate_cell(rows, Path(db), det, Path(tmp))
                else:
                    results[shape.name][det] = score_cell(rows, Path(db), det, Path(tmp), verify=args.verify)
        print(f"{shape.name}: " + "; ".join(
            f"{d} " + (f"P {r['precision']:.4f} R {r['recall']:.4f}" if "precision" in r else "calibrated")
            for d, r in results[shape.name].items()), file=sys.stderr)
    if args.calibrate:
        for det in dets:
            ts = np.round(np.arange(0.40, 0.90, 0.001), 3)
            P = np.array([results[s][det]["precision_at"](ts) for s in results])
            R = np.array([results[s][det]["recall_at"](ts) for s in results])
            ok = np.flatnonzero(P.mean(0) >= 0.995)
            if not len(ok):
                print(f"{det}: no threshold gives mean precision >= 0.995")
                continue
            i = ok[0]
            print(f"{det}: threshold {ts[i]:.3f}: mean precision {P[:, i].mean():.4f}, worst precision "
                  f"{P[:, i].min():.4f}, mean recall {R[:, i].mean():.4f}, worst recall {R[:, i].min():.4f}")
        return 0
    print(f"Shapes ({args.split} split, grid {args.grid}):")
    for shape in shapes:
        print(f"- {shape.name}: {shape.describe()}")
    print()
    print(markdown(results, list(dets)))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


def calibrate_cell(rows, pool_db: Path, model: str, work: Path) -> dict:
    """Precision and recall of the cell as functions of the threshold (the preset's score)."""
    from embeddr.catalog import Catalog
    from embeddr.encoders import resolve_preset
    from embeddr.index import load_index, stored
    from embeddr.normalize import Scorer, decide, is_blank

    db = cell_catalog(pool_db, [str(r.path) for r in rows], work / f"{model}.db")
    preset = resolve_preset(model)
    with Catalog(db) as catalog:
        index = load_index(catalog)
        ids, vecs = stored(index)
        vid_hash = {v: h for h, v in catalog.live_vector_ids().items()}
        files = list(catalog.files("ok"))
        a, b, s, _ = decide(index, ids, vecs, 0.35, Scorer.for_preset(preset))
    blank = {f.hash for f in files if is_blank(f.width, f.height, f.content_width, f.content_height)}
    group_of = {str(r.path): r.group for r in rows}
    files_of = defaultdict(list)
    for f in files:
        files_of[f.hash].append(f.path)
    pos_n = 0
    groups = defaultdict(int)
    for f in files:
        if group_of.get(f.path):
            groups[group_of[f.path]] += 1
    pos_n = sum(n * (n - 1) // 2 for n in groups.values())
    pos_s, neg_s = [], []
    for x, y, v in zip(a.tolist(), b.tolist(), s.tolist()):
        hx, hy = vid_hash[x], vid_hash[y]
        if hx in blank or hy in blank:
            continue
        for fa in files_of[hx]:
            for fb in files_of[hy]:
                ga, gb = group_of.get(fa), group_of.get(fb)
                (pos_s if ga and ga == gb else neg_s).append(v)
    for fs in files_of.values():
        for i in range(len(fs)):
            for j in range(i + 1, len(fs)):
                ga, gb = group_of.get(fs[i]), group_of.get(fs[j])
                (pos_s if ga and ga == gb else neg_s).append(1.0)
    pos_s, neg_s = np.sort(pos_s), np.sort(neg_s)

    def counts(ts):
        tp = len(pos_s) - np.searchsorted(pos_s, ts - 1e-6)
        fp = len(neg_s) - np.searchsorted(neg_s, ts - 1e-6)
        return tp, fp

    def precision_at(ts):
        tp, fp = counts(ts)
        return tp / np.maximum(tp + fp, 1)

    def recall_at(ts):
        return counts(ts)[0] / max(pos_n, 1)

    return {"precision_at": precision_at, "recall_at": recall_at}


if __name__ == "__main__":
    raise SystemExit(main())
