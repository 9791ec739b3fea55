#!/usr/bin/env python3
"""`embeddr scan` + `embeddr dupes` with shipped defaults on ../shared/data/realimages *as it is*, scored with its
manifest: pairs (precision, recall), false groups and missed groups, listed.

    python scripts/realimages_table.py --model sscd-distilled --model sscd --model phash

What counts as a duplicate (decided once, see scripts/build_pool.py): the ``natural_dups`` groups that are
the same capture re-rendered -- ``gcompris_same_source_*`` (one photo at two sizes), ``cv_tamper_ela`` (a
retouched copy), ``cv_text_rotated`` (a rotated copy), ``tuxpaint_mirror_*`` (a stamp and its mirror image).
Groups that are another capture of the same scene (stereo pairs, viewpoint, lighting, optical-flow pairs,
object-in-scene, renders, aerial pairs, adjacent video frames) are *ignored*: a pair inside one of them counts
neither way. Every other pair of files is a false pair (``distinct`` photos, ``hard_neg`` look-alikes and the
``docs`` pages are all different pictures).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_DATA = REPO.parent / "shared" / "data" / "realimages"
POSITIVE = ("gcompris_same_source_", "cv_tamper_ela", "cv_text_rotated", "tuxpaint_mirror_")


def truth(data: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(path -> positive group, path -> ignored group) for the manifest's files (absolute paths)."""
    pos, ign = {}, {}
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["set"] != "natural_dups":
                continue
            p = str((data / r["path"]).resolve())
            (pos if r["group"].startswith(POSITIVE) else ign)[p] = r["group"]
    return pos, ign


def run(model: str, data: Path, db: Path | None = None) -> dict:
    from embeddr.catalog import Catalog
    from embeddr.dupes import find_duplicates
    from embeddr.encoders import resolve_preset
    from embeddr.jobs import scan

    pos, ign = truth(data)
    with tempfile.TemporaryDirectory(prefix="embeddr_real_") as tmp:
        db = db or Path(tmp) / f"{model}.db"
        scan([data / "images"], db=db, model=model)
        with Catalog(db) as catalog:
            report = find_duplicates(catalog, resolve_preset(model))
            files = [f.path for f in catalog.files("ok")]
    members = defaultdict(set)
    for p in files:
        if p in pos:
            members[pos[p]].add(p)
    positives = {frozenset((x, y)) for g in members.values() for x in g for y in g if x < y}
    tp = fp = 0
    false_pairs = []
    false_kinds: dict[str, int] = {}
    for p in report.pairs:
        key = frozenset((p.a, p.b))
        if key in positives:
            tp += 1
        elif ign.get(p.a) is not None and ign.get(p.a) == ign.get(p.b):
            continue
        else:
            fp += 1
            false_pairs.append((round(p.score, 3), Path(p.a).name, Path(p.b).name))
            names = Path(p.a).name + " " + Path(p.b).name
            kind = next((k for k in ("cv_video_vtest", "cv_video_Megamind", "chessboard", "stellarium", "tuxpaint",
                                     "gcompris") if names.count(k) == 2), "other")
            false_kinds[kind] = false_kinds.get(kind, 0) + 1
    false_groups, found = [], set()
    for g in report.groups:
        paths = {m.path for m in g.members}
        labels = {pos.get(p) or ign.get(p) or p for p in paths}
        if len(labels) > 1:
            false_groups.append((round(g.min_score, 3), sorted(Path(p).name for p in paths)))
        for name, ms in members.items():
            if ms <= paths:
                found.add(name)
    missed = sorted(n for n, ms in members.items() if len(ms) > 1 and n not in found)
    return {"model": model, "threshold": report.threshold, "files": len(files), "positives": len(positives),
            "pairs": tp + fp, "tp": tp, "fp": fp, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / len(positives) if positives else 1.0, "groups": len(report.groups),
            "false_groups": false_groups, "false_kinds": false_kinds, "missed_groups": missed, "false_pairs": sorted(false_pairs, reverse=True)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=None)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)
    data = args.data.resolve()
    if not (data / "manifest.csv").is_file():
        ap.error(f"no manifest.csv in {data}")
    results = [run(m, data) for m in (args.model or ["sscd-distilled"])]
    print("| detector | threshold | files | true pairs | listed pairs | precision | recall | groups | false groups | missed groups |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['model']} | {r['threshold']} | {r['files']} | {r['positives']} | {r['pairs']} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['groups']} | {len(r['false_groups'])} | {len(r['missed_groups'])} |")
    for r in results:
        print(f"\n{r['model']}: false groups (min score, members):")
        for s, names in r["false_groups"] or [("-", ["none"])]:
            print(f"- {s}: {', '.join(names)}")
        print(f"{r['model']}: missed groups: {', '.join(r['missed_groups']) or 'none'}")
        print(f"{r['model']}: false pairs by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(r["false_kinds"].items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
