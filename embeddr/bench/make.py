"""Build a reproducible near-duplicate benchmark: originals, derived variants, distractors, ground truth.

Layout written under ``out``::

    truth.csv                       path,group,family,role   (paths relative to truth.csv's folder)
    transforms.csv                  path,source,family,params (one row per derived file: what was done)
    originals/<relpath>             byte copies of the source images
    derived/<family>/<relpath-stem>__v<k>.<ext>
    natural/<group>/<file>          optional real "same picture, other rendition" files (byte copies)
    distractors/<relpath>           byte copies of the distractor / hard-negative images
    doc_pages/page_<nnnn>.png       synthetic pages of one made-up document (alike, but not duplicates)

``truth.csv`` columns:

* ``path``   file, relative to the CSV's folder, with ``/`` separators;
* ``group``  shared by an original and everything derived from it (``img:<relpath>``, or ``nat:<name>``
  for a natural group with no synthetic original); unique for each distractor (``neg:<relpath>``) and each
  doc page (``doc:<nnnn>``);
* ``family`` the transform family for derived files (see :mod:`embeddr.bench.transforms`; ``natural`` /
  ``natural_mirror`` for real renditions), else ``original`` / ``distractor`` / ``doc_page``;
* ``role``   ``original`` | ``derived`` | ``distractor`` (doc pages are distractors).

Everything is a pure function of (inputs, seed): each source's variants are drawn from
``random.Random(f"{seed}:{relpath}")`` (so they do not depend on which other files are in the run or on
their order), save parameters are explicit and no metadata or time stamps are written, so two runs give
a byte-identical ``truth.csv`` and identical image files.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
import shutil
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from PIL import Image, ImageDraw

from .transforms import DEFAULT_FAMILIES, FAMILIES, PNG_SAVE, apply_family, default_font, to_rgb

__all__ = [
    "NaturalGroup",
    "TruthRow",
    "list_images",
    "make_benchmark",
    "make_doc_page",
    "pair_family",
    "read_truth",
    "split_groups",
    "truth_pairs",
]

TRUTH_HEADER = ("path", "group", "family", "role")
ROLES = ("original", "derived", "distractor")
# sub-folders of ``out`` that make_benchmark owns (cleared when it rebuilds a benchmark in place)
_OWNED = ("originals", "derived", "natural", "distractors", "doc_pages", "truth.csv", "transforms.csv")

Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 200_000_000)


@dataclass(frozen=True)
class TruthRow:
    path: Path  # absolute
    group: str
    family: str
    role: str


@dataclass(frozen=True)
class NaturalGroup:
    """Real files that are renditions of one picture.

    If a member is also one of the benchmark's sources, the other members join that source's group;
    otherwise ``original`` (default: the first file) becomes the group's original and the rest are
    ``derived`` with family ``family``.
    """

    name: str
    files: tuple[Path, ...]
    family: str = "natural"
    original: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "files", tuple(Path(f) for f in self.files))
        if len(self.files) < 2:
            raise ValueError(f"natural group {self.name!r} needs at least two files")


# --------------------------------------------------------------------------------------------------
# listing and paths
# --------------------------------------------------------------------------------------------------


def list_images(src: Path, *, exclude: Iterable[Path] = ()) -> list[Path]:
    """All files under ``src`` (recursive, sorted by relative path) that Pillow can identify.

    Hidden files and folders are skipped, as is anything under ``exclude``. Files Pillow cannot open are
    skipped with a warning (only the header is read here; decoding errors surface later, also as
    warnings).
    """
    src = Path(src)
    excl = [Path(e).resolve() for e in exclude]
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src):
        d = Path(dirpath)
        dirnames[:] = sorted(
            n for n in dirnames if not n.startswith(".") and not any(_is_under((d / n).resolve(), e) for e in excl)
        )
        for name in filenames:
            if name.startswith("."):
                continue
            p = d / name
            found.append((p.relative_to(src).as_posix(), p))
    found.sort()
    out = []
    for rel, p in found:
        try:
            with Image.open(p) as im:
                im.size  # noqa: B018 - identify only
        except Exception as e:  # noqa: BLE001 - any unreadable file is skipped
            if p.suffix.lower() in (".csv", ".txt", ".md", ".json", ".toml", ".yaml", ".yml"):
                continue  # obviously not an image: skip quietly
            warnings.warn(f"skipping unreadable image {p}: {e}", stacklevel=2)
            continue
        out.append(p)
    return out


def _is_under(p: Path, root: Path) -> bool:
    try:
        p.relative_to(root)
        return True
    except ValueError:
        return False


def _relpaths(files: Sequence[Path], root: Path | None) -> list[str]:
    """Stable relative names for ``files``: relative to ``root`` when under it, else to their common folder;
    collisions get a ``~n`` suffix."""
    files = [Path(f) for f in files]
    if not files:
        return []
    if root is None:
        root = Path(os.path.commonpath([str(f.resolve().parent) for f in files]))
    root_r = Path(root).resolve()
    rels = []
    for f in files:
        fr = f.resolve()
        rels.append(fr.relative_to(root_r).as_posix() if _is_under(fr, root_r) else f.name)
    seen: dict[str, int] = {}
    out = []
    for r in rels:
        key = r.lower()
        if key in seen:
            seen[key] += 1
            pp = PurePosixPath(r)
            r = str(pp.with_name(f"{pp.stem}~{seen[key]}{pp.suffix}"))
        else:
            seen[key] = 0
        out.append(r)
    return out


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=3)
        return False


# --------------------------------------------------------------------------------------------------
# synthetic document pages
# --------------------------------------------------------------------------------------------------

_DOC_WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have "
    "an had they you were their one all we can her has there been if more when will would who so no "
    "committee report budget meeting council proposal review members annual statement section article "
    "accounts schedule approval minutes district municipal records archive department resolution motion "
    "second carried agenda item public notice hearing amendment county property survey drainage road "
    "library school grant funding estimate contract tender works maintenance quarterly audit chairman "
    "secretary treasurer clerk present absent adjourned pursuant therefore whereas hereby provided"
).split()

DOC_TITLE = "NORTHBROOK MUNICIPAL ARCHIVE"
DOC_SUBTITLE = "Minutes of the Board of Works - Record Series 14"


def _doc_sentence(rng: random.Random) -> str:
    n = rng.randint(6, 18)
    words = [rng.choice(_DOC_WORDS) for _ in range(n)]
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), str(rng.randint(2, 1999)))
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", ";", ":"])


def make_doc_page(index: int, total: int, seed: int = 0, size: tuple[int, int] = (680, 880)) -> Image.Image:
    """Page ``index`` (1-based) of a made-up document: same header / layout on every page, new text."""
    rng = random.Random(f"{seed}:doc_page:{index}")
    w, h = size
    page = Image.new("L", (w, h), 255)
    d = ImageDraw.Draw(page)
    margin = round(w * 0.09)
    title_font = default_font(round(w * 0.030))
    small_font = default_font(round(w * 0.017))
    body_font = default_font(round(w * 0.019))
    # header (identical on every page)
    d.text((margin, round(h * 0.05)), DOC_TITLE, font=title_font, fill=0)
    d.text((margin, round(h * 0.05) + round(w * 0.040)), DOC_SUBTITLE, font=small_font, fill=40)
    rule_y = round(h * 0.05) + round(w * 0.072)
    d.line((margin, rule_y, w - margin, rule_y), fill=0, width=2)
    # footer (same place, different number)
    footer = f"Page {index} of {total}"
    fw = d.textbbox((0, 0), footer, font=small_font)[2]
    d.text(((w - fw) // 2, h - round(h * 0.05)), footer, font=small_font, fill=40)
    # body: paragraphs of generated text, wrapped to the text column
    line_h = round(w * 0.019 * 1.55)
    y = rule_y + line_h
    max_w = w - 2 * margin
    y_end = h - round(h * 0.09)
    while y + line_h < y_end:
        if rng.random() < 0.18:  # a numbered section heading
            head = f"{rng.randint(1, 12)}.{rng.randint(1, 9)}  {rng.choice(_DOC_WORDS).title()} {rng.choice(_DOC_WORDS)}"
            d.text((margin, y), head, font=body_font, fill=0, stroke_width=0)
            y += line_h
        words = " ".join(_doc_sentence(rng) for _ in range(rng.randint(2, 6))).split()
        indent = round(w * 0.04)
        line: list[str] = []
        x0 = margin + indent
        for word in words:
            trial = " ".join(line + [word])
            if d.textbbox((0, 0), trial, font=body_font)[2] > max_w - (x0 - margin) and line:
                d.text((x0, y), " ".join(line), font=body_font, fill=0)
                y += line_h
                x0 = margin
                line = [word]
                if y + line_h >= y_end:
                    break
            else:
                line.append(word)
        else:
            if line and y + line_h < y_end:
                d.text((x0, y), " ".join(line), font=body_font, fill=0)
                y += line_h
        y += line_h // 2  # paragraph gap
    return page.convert("RGB")


# --------------------------------------------------------------------------------------------------
# the builder
# --------------------------------------------------------------------------------------------------


def _pick_families(fams: Sequence[str], n: int, rng: random.Random) -> list[str]:
    """``n`` families for one source: a fresh shuffle of ``fams`` (repeated if n > len), so every family
    is equally likely and an image never gets the same family twice unless n > len(fams)."""
    out: list[str] = []
    while len(out) < n:
        order = list(fams)
        rng.shuffle(order)
        out.extend(order)
    return out[:n]


def _prepare_out(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    entries = [e for e in out.iterdir()]
    if not entries:
        return
    if not (out / "truth.csv").exists():
        raise FileExistsError(f"{out} is not empty and holds no truth.csv: refusing to write a benchmark there")
    for name in _OWNED:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def make_benchmark(
    src: Path | None,
    out: Path,
    *,
    seed: int = 0,
    per_image: int = 4,
    families: list[str] | None = None,
    distractors: Path | None = None,
    doc_pages: int = 20,
    limit: int | None = None,
    sources: Sequence[Path] | None = None,
    distractor_files: Sequence[Path] | None = None,
    natural_groups: Sequence[NaturalGroup] | None = None,
) -> Path:
    """Build a benchmark under ``out`` and return the path of its ``truth.csv``.

    Sources are the images under ``src`` (recursive, sorted; unreadable files skipped with a warning) or,
    if given, the explicit ``sources`` list (then ``src``, if given, is only the root their relative names
    are taken from). Each source is byte-copied to ``originals/`` and gets ``per_image`` variants from
    ``families`` (default: all of :data:`embeddr.bench.transforms.FAMILIES`). Distractors (images under
    ``distractors`` and/or the ``distractor_files`` list) are byte-copied as singletons; ``doc_pages``
    synthetic pages of one document are added as further distractors. ``natural_groups`` adds real
    renditions of one picture as positives. ``limit`` caps the number of sources (after sorting).

    ``out`` must be empty, missing, or a previous benchmark (whose files are then replaced).
    """
    out = Path(out)
    fams = list(families) if families is not None else list(DEFAULT_FAMILIES)
    unknown = [f for f in fams if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}; known: {list(FAMILIES)}")
    if per_image > 0 and not fams:
        raise ValueError("families is empty")
    if per_image < 0 or doc_pages < 0:
        raise ValueError("per_image and doc_pages must be >= 0")

    # -- sources
    if sources is not None:
        src_files = [Path(p) for p in sources]
        src_rels = _relpaths(src_files, Path(src) if src is not None else None)
        order = sorted(range(len(src_files)), key=lambda i: src_rels[i])
        src_files = [src_files[i] for i in order]
        src_rels = [src_rels[i] for i in order]
    elif src is not None:
        src = Path(src)
        src_files = list_images(src, exclude=[out])
        src_rels = _relpaths(src_files, src)
    else:
        src_files, src_rels = [], []
    if limit is not None:
        src_files, src_rels = src_files[:limit], src_rels[:limit]

    # -- distractors
    dis_files: list[Path] = []
    dis_root: Path | None = None
    if distractors is not None:
        dis_files += list_images(Path(distractors), exclude=[out])
        dis_root = Path(distractors)
    if distractor_files:
        dis_files += [Path(p) for p in distractor_files]
    if dis_root is None and src is not None and dis_files:
        src_r = Path(src).resolve()
        if all(_is_under(p.resolve(), src_r) for p in dis_files):
            dis_root = Path(src)
    # never list a file twice, nor a source as a distractor
    used = {p.resolve() for p in src_files}
    natural_groups = list(natural_groups or [])
    for ng in natural_groups:
        used.update(p.resolve() for p in ng.files)
    uniq: list[Path] = []
    for p in dis_files:
        r = p.resolve()
        if r in used:
            continue
        used.add(r)
        uniq.append(p)
    dis_files = uniq
    dis_rels = _relpaths(dis_files, dis_root)
    order = sorted(range(len(dis_files)), key=lambda i: dis_rels[i])
    dis_files = [dis_files[i] for i in order]
    dis_rels = [dis_rels[i] for i in order]

    _prepare_out(out)
    rows: list[tuple[str, str, str, str]] = []
    details: list[tuple[str, str, str, str]] = []
    src_group: dict[Path, str] = {}

    # -- originals and derived variants
    for path, rel in zip(src_files, src_rels):
        try:
            img = _load_rgb(path)
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
            continue
        group = f"img:{rel}"
        src_group[path.resolve()] = group
        orig_rel = f"originals/{rel}"
        (out / orig_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out / orig_rel)
        rows.append((orig_rel, group, "original", "original"))
        rng = random.Random(f"{seed}:{rel}")
        stem = str(PurePosixPath(rel).with_suffix(""))
        for k, fam in enumerate(_pick_families(fams, per_image, rng)):
            vrng = random.Random(f"{seed}:{rel}:{k}:{fam}")
            var = apply_family(fam, img, vrng)
            drel = f"derived/{fam}/{stem}__v{k}{var.save.ext}"
            (out / drel).parent.mkdir(parents=True, exist_ok=True)
            var.save.save(var.image, out / drel)
            rows.append((drel, group, fam, "derived"))
            details.append((drel, orig_rel, fam, f"{var.desc} -> {var.save.describe()}"))

    # -- natural renditions
    for ng in sorted(natural_groups, key=lambda g: g.name):
        members = [p for p in ng.files if _readable(p)]
        anchor = next((src_group[p.resolve()] for p in members if p.resolve() in src_group), None)
        if anchor is None:
            if len(members) < 2:
                warnings.warn(f"natural group {ng.name!r} has fewer than two readable files; skipped", stacklevel=2)
                continue
            orig = ng.original if ng.original is not None and Path(ng.original) in members else members[0]
            group = f"nat:{ng.name}"
        else:
            orig = None
            group = anchor
        names = _relpaths(members, None)
        for p, name in zip(members, names):
            if p.resolve() in src_group:
                continue  # already in the benchmark as a source
            rel = f"natural/{ng.name}/{name}"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out / rel)
            if orig is not None and p == Path(orig):
                rows.append((rel, group, "original", "original"))
            else:
                rows.append((rel, group, ng.family, "derived"))
                details.append((rel, "", ng.family, f"natural rendition from group {ng.name}"))

    # -- distractors
    for p, rel in zip(dis_files, dis_rels):
        if not _readable(p):
            continue
        drel = f"distractors/{rel}"
        (out / drel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, out / drel)
        rows.append((drel, f"neg:{rel}", "distractor", "distractor"))

    # -- synthetic document pages
    for i in range(1, doc_pages + 1):
        drel = f"doc_pages/page_{i:04d}.png"
        (out / drel).parent.mkdir(parents=True, exist_ok=True)
        PNG_SAVE.save(make_doc_page(i, doc_pages, seed), out / drel)
        rows.append((drel, f"doc:{i:04d}", "doc_page", "distractor"))

    paths = [r[0] for r in rows]
    if len(set(paths)) != len(paths):  # pragma: no cover - guarded by _relpaths
        raise RuntimeError("duplicate output paths in benchmark")

    truth = out / "truth.csv"
    _write_csv(truth, TRUTH_HEADER, rows)
    _write_csv(out / "transforms.csv", ("path", "source", "family", "params"), details)
    return truth


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


# --------------------------------------------------------------------------------------------------
# reading the truth back
# --------------------------------------------------------------------------------------------------


def read_truth(path: Path) -> list[TruthRow]:
    """Rows of a ``truth.csv``; ``TruthRow.path`` is absolute (the CSV's folder, resolved, joined with the
    relative path)."""
    path = Path(path)
    base = path.resolve().parent
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != TRUTH_HEADER:
            raise ValueError(f"{path}: expected header {','.join(TRUTH_HEADER)}, got {reader.fieldnames}")
        for r in reader:
            if r["role"] not in ROLES:
                raise ValueError(f"{path}: bad role {r['role']!r}")
            rows.append(TruthRow(base / PurePosixPath(r["path"]), r["group"], r["family"], r["role"]))
    return rows


def pair_family(a: TruthRow, b: TruthRow) -> str:
    """Family of a positive pair: the derived member's family when the other is the original; for two
    derived members the harder one -- ``combo`` if either is combo, else the alphabetically first."""
    if a.role == "original":
        return b.family
    if b.role == "original":
        return a.family
    if "combo" in (a.family, b.family):
        return "combo"
    return min(a.family, b.family)


def truth_pairs(rows: Iterable[TruthRow]) -> dict[frozenset[Path], str]:
    """All positive pairs: ``{frozenset({path_a, path_b}): family}`` for every two files of one group
    (see :func:`pair_family`). Distractors are singletons and give no pairs."""
    groups: dict[str, list[TruthRow]] = defaultdict(list)
    for r in rows:
        groups[r.group].append(r)
    pairs: dict[frozenset[Path], str] = {}
    for members in groups.values():
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                pairs[frozenset((members[i].path, members[j].path))] = pair_family(members[i], members[j])
    return pairs


# --------------------------------------------------------------------------------------------------
# calibration / hold-out split
# --------------------------------------------------------------------------------------------------


def split_fraction(key: str, salt: str = "embeddr-split-v1") -> float:
    """Where ``key`` falls in [0, 1): the first 8 bytes of sha256(salt + key) as a fraction."""
    h = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2.0**64


def split_groups(
    keys: Iterable[str], *, fraction_holdout: float = 0.5, salt: str = "embeddr-split-v1"
) -> tuple[set[str], set[str]]:
    """Deterministic split of ``keys`` into ``(calib, holdout)``: a key is held out when
    ``split_fraction(key, salt) < fraction_holdout``. Depends only on each key (not on the others), so a
    key keeps its side when the set grows."""
    if not 0.0 <= fraction_holdout <= 1.0:
        raise ValueError("fraction_holdout must be in [0, 1]")
    calib: set[str] = set()
    holdout: set[str] = set()
    for k in keys:
        (holdout if split_fraction(k, salt) < fraction_holdout else calib).add(k)
    return calib, holdout

