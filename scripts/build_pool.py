#!/usr/bin/env python3
"""Build the labelled image pool the shape sweep samples from (see embeddr/bench/shapes.py).

    python scripts/build_pool.py --out /work/cache/pool            # ~13k files, a few minutes

Sources (all read in place; only derived renditions and rendered PDF pages are written, under --out):

* ``../shared/data/realimages`` (``--data``): the 323 ``distinct`` photos (each with ``--renditions``
  derived renditions), the ``hard_neg`` groups as crowds of look-alikes (star fields, stamps and product
  shots on white, GCompris photo sets, chessboard shots of one scene), the ``natural_dups`` groups;
* real PDF documents from Debian ``-doc`` packages, fetched with ``apt-get download`` into ``--debs``
  when missing: ``texlive-science-doc`` and ``texlive-pictures-doc`` (TikZ and PSTricks diagrams, added
  2026-11-29 so that diagram pages are seen in calibration) and the slide decks of ``texlive-latex-extra-doc``
  (its PDFs whose first page is landscape: beamer themes' demo talks with overlay steps, one talk in several
  themes; added 2026-11-30 so that slide decks are seen in calibration; 593 MB to download) for the calibration
  split, ``texlive-latex-base-doc`` and ``texlive-metapost-doc`` and ``texlive-games`` (chess, go, crossword
  and card-game manuals: board diagrams) for the test split. (``texlive-humanities-doc`` and the wallpaper packages are
  an independent benchmark kept elsewhere: never used here.)
* desktop wallpapers (added 2026-11-29: smooth abstract art, gradients and landscapes, which the photo pool
  lacks and which a copy-detection model finds alike), also fetched with ``apt-get download``, shrunk to a
  long side of 1024 px and given renditions like the photos: ``lxqt-themes``, ``xfdesktop4-data`` and
  ``breeze`` (its "Next" wallpaper) for the calibration split, ``ukui-wallpapers``, ``sway-backgrounds`` and
  ``desktop-base`` (the grub backgrounds of its themes) for the test split. A wallpaper shipped at other
  sizes or aspect ratios (Next, Sway's blue, each desktop-base theme's 4:3 grub background) forms a natural
  group with its picture. Wallpapers that are another wallpaper of the set with a logo, an ink splat or
  other colours are left out (whether they are copies is a policy, not a fact).

Which ``natural_dups`` groups are duplicates (positives): the same capture re-rendered —
``gcompris_same_source_*`` (one photo shipped at two sizes), ``cv_tamper_ela`` (a retouched copy),
``cv_text_rotated`` (a rotated copy) -> family ``natural``; ``tuxpaint_mirror_*`` (a stamp and its mirror
image) -> ``natural_mirror``. Another capture of the same scene is *not* a copy and is left out of the
positives: stereo pairs, viewpoint, lighting, optical-flow pairs, object-in-scene, renders, aerial pairs
and adjacent video frames (``cv_video_*``). One frame of each video group (frames seconds apart) forms the
crowds ``video_vtest`` (a static camera) and ``video_Megamind``: look-alikes that are not copies; a shape
includes them only when it names them.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from embeddr.bench.make import split_fraction  # noqa: E402
from embeddr.bench.shapes import build_pool  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "realimages"
# package: split, or (split, "slides"): only its slide decks (documents whose first page is landscape).
# No package here may be a source of the reference set (scripts/build_reference.py): texlive-pstricks-doc was a
# calibration source on 2026-11-30 until it replaced texlive-pictures-doc there (the two had overlapped)
DOC_PACKAGES = {"texlive-science-doc": "calib", "texlive-pictures-doc": "calib",
                "texlive-latex-extra-doc": ("calib", "slides"),
                "texlive-latex-base-doc": "test", "texlive-metapost-doc": "test", "texlive-games": "test"}
HELD_OUT_SOURCES = ("texlive-humanities-doc", "enlightenment-data", "plasma-workspace-wallpapers",
                    "mate-backgrounds", "gnome-backgrounds", "lomiri-wallpapers")
POSITIVE_NATURALS = {"gcompris_same_source_": "natural", "cv_tamper_ela": "natural", "cv_text_rotated": "natural",
                     "tuxpaint_mirror_": "natural_mirror"}
CROWD_OF = {"stellarium_deep_sky": "stars", "cv_chessboard_same_scene": "chessboard"}
# package: (split, picture globs, natural groups {picture file: [other renditions]}, stems left out)
WALLPAPERS = {
    "lxqt-themes": ("calib", ["usr/share/lxqt/wallpapers/*.png", "usr/share/lxqt/wallpapers/*.jpg"], {},
                    {"origami-bright-logo", "plasma-logo-dark", "waves-purple-logo", "triangles-logo",
                     "lxqt-origami-green", "waves-logo"}),
    "xfdesktop4-data": ("calib", ["usr/share/backgrounds/xfce/*.png", "usr/share/backgrounds/xfce/*.jpg"], {}, set()),
    "breeze": ("calib", ["usr/share/wallpapers/Next/contents/images/1920x1080.png"],
               {"usr/share/wallpapers/Next/contents/images/1920x1080.png":
                [f"usr/share/wallpapers/Next/contents/images/{s}.png" for s in
                 ("1024x768", "1080x1920", "1280x1024", "1366x768", "1600x1200", "1920x1200")]}, set()),
    "ukui-wallpapers": ("test", ["usr/share/backgrounds/*.png", "usr/share/backgrounds/*.jpg"], {}, set()),
    "sway-backgrounds": ("test", ["usr/share/backgrounds/sway/Sway_Wallpaper_Blue_1920x1080.png"],
                         {"usr/share/backgrounds/sway/Sway_Wallpaper_Blue_1920x1080.png":
                          ["usr/share/backgrounds/sway/Sway_Wallpaper_Blue_*.png"]}, set()),
    "desktop-base": ("test", ["usr/share/desktop-base/*-theme/grub/grub-16x9.png"],
                     {"usr/share/desktop-base/*-theme/grub/grub-16x9.png": ["grub-4x3.png"]}, {"joy-inksplat"}),
}
WALLPAPER_SIDE = 1024


def _unpack(debs: Path, pkg: str) -> Path:
    tree = debs / "x" / pkg
    if not tree.exists():
        if not list(debs.glob(f"{pkg}_*.deb")):
            subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
        deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
        tree.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return tree


def _shrunk(src: Path, dst: Path) -> Path:
    """``src`` with a long side of at most WALLPAPER_SIDE, as ``dst`` (+ the source's suffix), once."""
    from PIL import Image

    from embeddr.bench.transforms import to_rgb

    dst = dst.with_suffix(src.suffix.lower())
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            img = to_rgb(im)
        img.thumbnail((WALLPAPER_SIDE, WALLPAPER_SIDE), Image.LANCZOS)
        img.save(dst, quality=92) if dst.suffix == ".jpg" else img.save(dst)
    return dst


def fetch_wallpapers(debs: Path, stage: Path) -> tuple[list[tuple[str, Path, str]], list[tuple]]:
    """(photos as (name, path, split), naturals as (group, split, members, family, anchor name))."""
    debs.mkdir(parents=True, exist_ok=True)
    photos, naturals = [], []
    for pkg, (split, globs, nat, skip) in WALLPAPERS.items():
        assert not pkg.startswith(HELD_OUT_SOURCES)
        tree = _unpack(debs, pkg)
        for pattern in globs:
            for src in sorted(tree.glob(pattern)):
                # a theme's grub background: the theme; a KDE wallpaper package (Next/contents/images/WxH.png): its name
                design = (src.parent.parent.name if src.parent.name == "grub"
                          else src.parents[2].name if src.parent.name == "images" else src.stem)
                if design.removesuffix("-theme") in skip or src.stem in skip:
                    continue
                design = design.removesuffix("-theme")
                name = f"wallpapers/{pkg}/{design}{src.suffix.lower()}"
                photos.append((name, _shrunk(src, stage / pkg / design), split))
                others = next((v for k, v in nat.items() if src.match(k)), [])
                members = []
                for o in others:
                    hits = sorted(tree.glob(o)) if "/" in o else [src.parent / o]
                    members += [_shrunk(h, stage / pkg / f"{design}__{h.stem}") for h in hits
                                if h.exists() and h != src]
                if members:
                    naturals.append((f"wall_{pkg}_{design}", split, members, "natural", name))
    return photos, naturals


def side(key: str) -> str:
    return "test" if split_fraction(key) < 0.5 else "calib"


def fetch_docs(debs: Path) -> list[tuple[str, str, Path]]:
    debs.mkdir(parents=True, exist_ok=True)
    out = []
    for pkg, split in DOC_PACKAGES.items():
        assert not pkg.startswith(HELD_OUT_SOURCES)
        split, *select = (split,) if isinstance(split, str) else split
        out.append((pkg, split, _unpack(debs, pkg), *select))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--debs", type=Path, default=Path.home() / ".cache" / "embeddr-bench" / "debs")
    ap.add_argument("--renditions", type=int, default=30)
    ap.add_argument("--docs-per-set", type=int, default=80)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data = args.data.resolve()
    if not (data / "manifest.csv").exists():
        ap.error(f"no manifest.csv in {data}")
    with open(data / "manifest.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_set: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_set[r["set"]][r["group"]].append(r["path"])
    distinct = sorted({p for ps in by_set["distinct"].values() for p in ps})
    distinct_set = set(distinct)

    naturals, in_natural = [], set()
    for name in sorted(by_set["natural_dups"]):
        fam = next((f for pre, f in POSITIVE_NATURALS.items() if name.startswith(pre)), None)
        files = sorted(set(by_set["natural_dups"][name]))
        in_natural.update(files)
        if fam is None:
            continue
        anchor = next((p for p in files if p in distinct_set), None)
        # the member that is a distinct photo stays a picture; its renditions join that picture's group
        split = side(anchor) if anchor else side(name)
        members = [data / p for p in files if p != anchor]
        naturals.append((name, split, members, fam, anchor))

    crowds = []
    for g, files in sorted(by_set["hard_neg"].items()):
        crowd = CROWD_OF.get(g) or g.split("_")[0]  # stars, chessboard, tuxpaint (stamps), gcompris
        for p in sorted(set(files)):
            if p in distinct_set or p in in_natural:
                continue
            key = p if g in CROWD_OF else g  # big one-scene crowds split by file, the others by group
            crowds.append((crowd, side(key), data / p))
    for name in sorted(by_set["natural_dups"]):
        if name.startswith("cv_video_"):  # one frame of each group: frames of a video, seconds apart
            video = name.split("_")[2]
            crowds.append((f"video_{video}", side(video), data / sorted(by_set["natural_dups"][name])[0]))

    photos = [(p, data / p) for p in distinct]
    wall_photos, wall_naturals = fetch_wallpapers(args.debs, args.out / "wallpapers_src")
    photos += wall_photos
    naturals += wall_naturals
    pool = build_pool(args.out, photos=photos, renditions=args.renditions, doc_sets=fetch_docs(args.debs),
                      docs_per_set=args.docs_per_set, crowds=crowds,
                      naturals=[(n, s, m) for n, s, m, _, _ in naturals], seed=args.seed, workers=args.workers)
    # natural families and anchors: rewrite the natural rows (group = the anchor picture's group if any)
    fam_of = {n: (f, a) for n, _, _, f, a in naturals}
    with open(pool, newline="", encoding="utf-8") as f:
        prow = list(csv.DictReader(f))
    for r in prow:
        if r["kind"] == "natural":
            name = r["unit"][4:]
            fam, anchor = fam_of[name]
            if anchor:
                r["group"] = f"img:{anchor}"
                r["unit"] = f"img:{anchor}"
                r["kind"] = "picture"
                r["family"] = fam
                r["rank"] = "99"  # after the synthetic renditions: joins its picture whenever it is sampled
            elif r["family"] != "original":
                r["family"] = fam
    with open(pool, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(prow[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(prow)
    kinds = defaultdict(int)
    for r in prow:
        kinds[(r["split"], r["kind"])] += 1
    print(pool, dict(sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
