#!/usr/bin/env python3
"""Build a model's *reference background*: vectors of generic look-alike images, shipped in models/reference/.

    python scripts/build_reference.py --model sscd-distilled      # writes models/reference/sscd-distilled.npy
    python scripts/build_reference.py --model sscd

The normalised score (embeddr/normalize.py) asks of each image "how close are things that are certainly
*not* copies of me?". The collection answers that for crowds it holds many of; this reference set answers
it for the kinds of image that look alike to any copy detector even when the collection holds only a few
of them: typeset text pages, clip-art and product shots on white, screenshots and diagrams. (Meta's SSCD
paper normalises with a background set the same way.) Only the vectors are shipped (float16), never the
images.

Sources, all Debian packages fetched with ``apt-get download`` (none is a source of the independent held-out
benchmark, and none is a source of the calibration or test documents of the quality benchmark's pool,
scripts/build_pool.py: a page of the pool that is also in this set would look more like it than an unseen page
does, and flatter every rule read from reference backgrounds):

* ``texlive-latex-recommended-doc``, ``texlive-fonts-extra-doc``, ``texlive-pstricks-doc``,
  ``texlive-publishers-doc``: pages of real PDF manuals, font tables, slides, PSTricks diagrams and journal styles
  (rendered with pypdfium2; up to 250 documents a package, 6 pages spread over each). Until 2026-11-30 the
  diagrams came from ``texlive-pictures-doc``, which is also the pool's calibration diagram source: 221 of the
  pool's 1,298 pages of it (44 of its 80 documents) were in this set (cosine >= 0.98), so calibration diagram
  pages looked more like the reference set than unseen ones do. The two packages swapped roles
  (``texlive-pstricks-doc`` left the pool);
* ``openclipart-png``: clip-art on transparent backgrounds (flattened on white by the decoder);
* ``kstars-data``: screenshots, diagrams and sky textures from the KStars handbook.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DOC_PACKAGES = ("texlive-latex-recommended-doc", "texlive-fonts-extra-doc", "texlive-pstricks-doc",
                "texlive-publishers-doc")
PACKAGES = DOC_PACKAGES + ("openclipart-png", "kstars-data")
PAGES_PER_DOC = 6  # spread over the document
DOCS_PER_PACKAGE = 250
CLIPART = 1500


def fetch(debs: Path) -> dict[str, Path]:
    debs.mkdir(parents=True, exist_ok=True)
    out = {}
    for pkg in PACKAGES:
        tree = debs / "x" / pkg
        if not tree.exists():
            if not list(debs.glob(f"{pkg}_*.deb")):
                subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True)
            tree.mkdir(parents=True)
            subprocess.run(["dpkg-deb", "-x", str(sorted(debs.glob(f"{pkg}_*.deb"))[-1]), str(tree)], check=True)
        out[pkg] = tree
    return out


def collect(trees: dict[str, Path], work: Path, seed: int = 0) -> list[Path]:
    import pypdfium2 as pdfium

    files: list[Path] = []
    pages = work / "pages"
    for pkg in DOC_PACKAGES:
        pdfs = sorted(trees[pkg].rglob("*.pdf"))
        random.Random(f"{seed}:{pkg}").shuffle(pdfs)
        for pdf in sorted(pdfs[:DOCS_PER_PACKAGE]):
            try:
                doc = pdfium.PdfDocument(str(pdf))
            except Exception:  # noqa: BLE001 - skip what pdfium cannot open
                continue
            try:
                n = len(doc)
                for i in sorted({round(j * (n - 1) / max(PAGES_PER_DOC - 1, 1)) for j in range(min(n, PAGES_PER_DOC))}):
                    p = pages / pkg / pdf.stem / f"p{i + 1:03d}.jpg"
                    if not p.exists():
                        page = doc[i]
                        scale = 1100 / max(page.get_size())
                        p.parent.mkdir(parents=True, exist_ok=True)
                        page.render(scale=scale).to_pil().convert("RGB").save(p, "JPEG", quality=90)
                    files.append(p)
            except Exception:  # noqa: BLE001 - a page pdfium cannot render
                continue
            finally:
                doc.close()
    clip = sorted(trees["openclipart-png"].rglob("*.png"))
    random.Random(seed).shuffle(clip)
    files += sorted(clip[:CLIPART])
    files += sorted(p for p in trees["kstars-data"].rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--debs", type=Path, default=Path.home() / ".cache" / "embeddr-bench" / "refdebs")
    ap.add_argument("--work", type=Path, default=None, help="folder for rendered pages and the catalog")
    ap.add_argument("--out", type=Path, default=None, help="default: models/reference/MODEL.npy")
    args = ap.parse_args(argv)
    from embeddr.api import scan
    from embeddr.catalog import Catalog

    work = args.work or Path(tempfile.mkdtemp(prefix="embeddr_ref_"))
    files = collect(fetch(args.debs), work)
    db = work / f"{args.model}.db"
    scan(files, db=db, model=args.model)
    with Catalog(db) as catalog:
        _, vecs, _ = catalog.live_vectors()
    out = args.out or REPO / "models" / "reference" / f"{args.model}.npy"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vecs.astype(np.float16))
    print(f"{out}: {len(vecs)} reference vectors from {len(files)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
