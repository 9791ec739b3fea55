"""Benchmarks with structure knobs: a labelled *pool* of real images, and *shapes* sampled from it.

One benchmark shape is not evidence: a default tuned on "4 variants per photo and one short document"
can collapse on a collection whose pictures have 13 renditions and whose documents are real PDFs. So
the quality benchmark is built in two steps:

1. :func:`build_pool` writes, once, a labelled pool of real images under a folder:

   * **pictures**: each ``distinct`` photo of ``../shared/data/realimages`` (or any folder of photos) and
     up to ``renditions`` (default 30) derived renditions of it, drawn from :data:`RENDITION_SCHEDULE`
     (every family appears in the first 13); a picture's *set* is the first part of its name (``images/...``
     for the real photos, ``wallpapers/...`` for desktop backgrounds: smooth abstract art and landscapes);
   * **docs**: every page of real multi-page PDF documents (Debian's ``-doc`` packages ship thousands),
     rendered with pypdfium2 like a scanner would (JPEG, ~1100 px long side); the pages of one document
     look alike and are *not* duplicates of each other;
   * **crowds**: groups of look-alikes that are not duplicates (star fields, stamps and product shots on
     white, chessboard shots of one scene, ...), read in place;
   * **natural** renditions (the same capture re-rendered by someone else), as positives.

   Each file has a split (``calib`` or ``test``): pictures and crowds by a hash of their name, documents by
   source package, so the calibration never sees a test photo, document or crowd member.

2. A :class:`Shape` says how a collection looks: renditions per picture (a fixed number or a range drawn
   per picture), how many pictures, documents (how many, and how long), crowds (which, and how many of
   each), natural groups, and a seed. :func:`sample` picks the files of one shape from the pool's split.
   The sweep (``scripts/sweep_shapes.py``) scores a grid of shapes with the same code ``embeddr dupes``
   runs, from vectors that ``embeddr scan`` computed once for the whole pool.

The pool's ``pool.csv`` has one row per file: ``path,split,kind,unit,group,family`` where ``kind`` is
``picture`` | ``doc`` | ``crowd`` | ``natural``, ``unit`` is what a shape samples (a picture, a document,
a crowd, a natural group) and ``group`` the duplicate group (``""`` for a file that duplicates nothing).
"""

from __future__ import annotations

import csv
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from PIL import Image

from .make import split_fraction
from .transforms import apply_family, to_rgb

__all__ = ["RENDITION_SCHEDULE", "PoolRow", "Shape", "build_pool", "read_pool", "sample"]

# the order in which a picture gains renditions: every family within the first 13, then again with other
# parameters (a picture with 30 renditions has each family two or three times)
RENDITION_SCHEDULE: tuple[str, ...] = (
    "crop_mild", "hue", "thumbnail", "rescan", "overlay", "border", "grey", "crop_strong", "tint", "combo",
    "mirror", "reencode", "recolour", "crop", "rescan", "border", "overlay", "combo", "thumbnail", "tint",
    "crop_strong", "hue", "crop_mild", "combo", "grey", "rescan", "overlay", "border", "reencode", "combo",
)
POOL_HEADER = ("path", "split", "kind", "unit", "group", "family")
DOC_LONG_SIDE = 1100
MAX_DOC_PAGES = 82
NATURAL_RANK = 99  # pool rank of a real rendition that joins a picture's group
# picture sets a shape samples only when it names them (Shape.picture_sets): desktop wallpapers
# (scripts/build_pool.py) joined the pool after the photo shapes' figures were published
OPT_IN_PICTURE_SETS = ("wallpapers",)


@dataclass(frozen=True)
class PoolRow:
    path: Path  # absolute
    split: str  # "calib" | "test"
    kind: str  # "picture" | "doc" | "crowd" | "natural"
    unit: str
    group: str  # duplicate group; "" = duplicates nothing
    family: str  # "original", a transform family, "natural", "doc_page", "crowd"
    rank: int = 0  # pictures: 0 = original, i = i-th rendition


def _split_of(key: str, fraction_test: float = 0.5) -> str:
    return "test" if split_fraction(key) < fraction_test else "calib"


# ------------------------------------------------------------------------------------------------
# building the pool
# ------------------------------------------------------------------------------------------------


def _render_pdf(pdf: Path, out_dir: Path, max_pages: int = MAX_DOC_PAGES) -> list[Path]:
    import pypdfium2 as pdfium  # bench extra

    doc = pdfium.PdfDocument(str(pdf))
    out: list[Path] = []
    try:
        for i in range(min(len(doc), max_pages)):
            p = out_dir / f"p{i + 1:03d}.jpg"
            out.append(p)
            if p.exists():  # a pool that is grown, not rebuilt, keeps its pages (and their vectors)
                continue
            page = doc[i]
            w, h = page.get_size()
            scale = DOC_LONG_SIDE / max(w, h, 1)
            img = page.render(scale=scale).to_pil().convert("RGB")
            p.parent.mkdir(parents=True, exist_ok=True)
            img.save(p, "JPEG", quality=90)
    finally:
        doc.close()
    return out


def _pdf_pages(pdf: Path, select: str = "any") -> int:
    """How many pages ``pdf`` has (0: unreadable, or not of the ``select`` kind: ``"slides"`` keeps only
    documents whose first page is landscape, wider than 1.2 x its height: slide decks, not manuals)."""
    import pypdfium2 as pdfium

    try:
        doc = pdfium.PdfDocument(str(pdf))
    except Exception:  # noqa: BLE001 - an unreadable PDF is just not used
        return 0
    try:
        if select == "slides":
            w, h = doc[0].get_size()
            if w <= 1.2 * h:
                return 0
        return len(doc)
    except Exception:  # noqa: BLE001
        return 0
    finally:
        doc.close()


def build_pool(out: Path, *, photos: Sequence[tuple] = (), renditions: int = 30,
               doc_sets: Sequence[tuple[str, str, Path]] = (), docs_per_set: int = 80, min_pages: int = 2,
               max_pages: int = MAX_DOC_PAGES, crowds: Sequence[tuple[str, str, Path]] = (),
               naturals: Sequence[tuple[str, str, Sequence[Path]]] = (), seed: int = 0,
               workers: int = 1) -> Path:
    """Write a pool under ``out`` and return its ``pool.csv``.

    ``photos``: ``(name, path)`` of distinct photos (split by name), or ``(name, path, split)``.
    ``doc_sets``: ``(name, split, folder)`` or ``(name, split, folder, select)`` of PDF folders (documents with
    ``min_pages``..``max_pages`` pages, only slide decks when ``select`` is ``"slides"``; at most
    ``docs_per_set`` of them, drawn with ``seed``). ``crowds``: ``(crowd name, split, path)`` of
    look-alike files, read in place.
    ``naturals``: ``(group name, split, paths)`` of real renditions of one picture, read in place.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str, str, str, str]] = []

    jobs = [(p[0], str(p[1]), str(out), renditions, seed, p[2] if len(p) > 2 else _split_of(p[0]))
            for p in photos]
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as ex:
            results = list(ex.map(_picture_rows, jobs, chunksize=4))
    else:
        results = [_picture_rows(j) for j in jobs]
    for r in results:
        rows += r

    for set_name, split, folder, *select in doc_sets:
        pdfs = sorted(Path(folder).rglob("*.pdf"))
        usable = [p for p in pdfs if min_pages <= _pdf_pages(p, *select) <= max_pages]
        rng = random.Random(f"{seed}:{set_name}")
        rng.shuffle(usable)
        names: set[str] = set()
        for pdf in sorted(usable[:docs_per_set]):
            name = pdf.stem if pdf.stem not in names else f"{pdf.parent.name}-{pdf.stem}"  # two demo.pdf
            names.add(name)
            unit = f"doc:{set_name}/{name}"
            try:
                pages = _render_pdf(pdf, out / "docs" / set_name / name)
            except Exception:  # noqa: BLE001 - skip a PDF pdfium cannot render
                continue
            for p in pages:
                rows.append((str(p), split, "doc", unit, "", "doc_page"))

    for crowd, split, path in crowds:
        rows.append((str(Path(path).resolve()), split, "crowd", f"crowd:{crowd}", "", "crowd"))
    for name, split, paths in naturals:
        for i, p in enumerate(paths):
            rows.append((str(Path(p).resolve()), split, "natural", f"nat:{name}", f"nat:{name}",
                         "original" if i == 0 else "natural"))

    pool = out / "pool.csv"
    with open(pool, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(POOL_HEADER + ("rank",))
        for r in rows:
            rank = r[0].rsplit("/r", 1)[-1][:2] if r[2] == "picture" else "0"
            w.writerow(r + (int(rank) if rank.isdigit() else 0,))
    return pool


def _picture_rows(job) -> list[tuple[str, str, str, str, str, str]]:
    name, path, out, renditions, seed, split = job
    stem = PurePosixPath(name).with_suffix("").as_posix().replace("/", "__")
    folder = Path(out) / "pictures" / split / stem
    folder.mkdir(parents=True, exist_ok=True)
    unit = f"img:{name}"
    orig = folder / f"r00{Path(path).suffix.lower()}"
    if not orig.exists():
        shutil.copyfile(path, orig)
    rows = [(str(orig), split, "picture", unit, unit, "original")]
    with Image.open(path) as im:
        img = to_rgb(im)
    for k in range(1, renditions + 1):
        fam = RENDITION_SCHEDULE[(k - 1) % len(RENDITION_SCHEDULE)]
        rng = random.Random(f"{seed}:{name}:{k}:{fam}")
        var = apply_family(fam, img, rng)
        p = folder / f"r{k:02d}_{fam}{var.save.ext}"
        if not p.exists():
            var.save.save(var.image, p)
        rows.append((str(p), split, "picture", unit, unit, fam))
    return rows


def read_pool(pool: Path) -> list[PoolRow]:
    with open(pool, newline="", encoding="utf-8") as f:
        return [PoolRow(Path(r["path"]), r["split"], r["kind"], r["unit"], r["group"], r["family"], int(r["rank"]))
                for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------------------------
# shapes
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How one benchmark collection looks. ``renditions``: per picture, an int or an inclusive
    ``(low, high)`` range drawn per picture; ``pictures``: how many (None = all of the split);
    ``docs``: how many documents; ``doc_pages``: inclusive page-count range of the documents used;
    ``crowds``: ``{crowd name: how many members}`` (0 / missing = none, -1 = all); ``naturals``: include
    the natural groups; ``extra_singletons``: pictures without renditions (originals only) added as
    plain distinct photos, to grow the collection."""

    name: str
    renditions: int | tuple[int, int] = 4
    pictures: int | None = None
    docs: int = 0
    doc_pages: tuple[int, int] = (2, MAX_DOC_PAGES)
    crowds: dict[str, int] = field(default_factory=dict)
    naturals: bool = True
    singletons: int = 0
    doc_sets: tuple[str, ...] = ()  # only documents of these sets (e.g. "texlive-games"); () = any
    picture_sets: tuple[str, ...] = ()  # pictures of these sets only (a picture's set: the first part of its
    # name, "images" for the real photos); () = every set but the opt-in ones (OPT_IN_PICTURE_SETS)
    seed: int = 0

    def describe(self) -> str:
        r = self.renditions if isinstance(self.renditions, int) else f"{self.renditions[0]}-{self.renditions[1]}"
        crowd = ",".join(f"{k}:{'all' if v < 0 else v}" for k, v in sorted(self.crowds.items()) if v) or "-"
        return (f"renditions {r}, pictures {self.pictures or 'all'}, docs {self.docs} ({self.doc_pages[0]}-"
                f"{self.doc_pages[1]} p), crowds {crowd}, naturals {'yes' if self.naturals else 'no'}, "
                f"singletons {self.singletons}")


def _sampled_set(name: str, shape: Shape) -> bool:
    return name in shape.picture_sets if shape.picture_sets else name not in OPT_IN_PICTURE_SETS


def sample(pool: Iterable[PoolRow], shape: Shape, split: str) -> list[PoolRow]:
    """The files of one shape, from the pool's ``split`` (deterministic in ``shape.seed``)."""
    rng = random.Random(f"{shape.seed}:{shape.name}")
    units: dict[str, list[PoolRow]] = defaultdict(list)
    for r in pool:
        if r.split == split:
            units[r.unit].append(r)
    out: list[PoolRow] = []

    pictures = sorted(u for u in units if u.startswith("img:") and _sampled_set(u[4:].split("/", 1)[0], shape))
    rng.shuffle(pictures)
    n_pic = len(pictures) if shape.pictures is None else min(shape.pictures, len(pictures))
    chosen, rest = pictures[:n_pic], pictures[n_pic:]
    for u in sorted(chosen):
        r = shape.renditions if isinstance(shape.renditions, int) else rng.randint(*shape.renditions)
        # synthetic renditions 1..r; real renditions (rank 99) when the shape has naturals
        out += [x for x in sorted(units[u], key=lambda x: x.rank)
                if x.rank <= r or (x.rank == NATURAL_RANK and shape.naturals)]
    for u in sorted(rest[: shape.singletons]):  # originals only: distinct photos that duplicate nothing
        orig = min(units[u], key=lambda r: r.rank)
        out.append(PoolRow(orig.path, orig.split, "picture", orig.unit, "", "singleton", 0))

    docs = sorted(u for u in units if u.startswith("doc:") and shape.doc_pages[0] <= len(units[u]) <= shape.doc_pages[1]
                  and (not shape.doc_sets or u[4:].split("/", 1)[0] in shape.doc_sets))
    rng.shuffle(docs)
    for u in sorted(docs[: shape.docs]):
        out += units[u]

    if shape.naturals:
        for u in sorted(u for u in units if u.startswith("nat:")):
            out += units[u]
    for crowd, n in sorted(shape.crowds.items()):
        members = sorted(units.get(f"crowd:{crowd}", []), key=lambda r: str(r.path))
        if n and members:
            rng.shuffle(members)
            out += members if n < 0 else members[:n]

    # a file in two units (a video frame that is a natural rendition and a crowd member) is kept once, first
    # role wins: a natural group's members are never counted as look-alikes of each other
    seen: set[Path] = set()
    uniq = []
    for r in out:
        if r.path not in seen:
            seen.add(r.path)
            uniq.append(r)
    return uniq
