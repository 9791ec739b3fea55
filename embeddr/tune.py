"""Pick a threshold for a target precision on the user's own collection, and audit against a hash.

>>> from embeddr.jobs import tune
>>> result = tune("~/photos", precision=0.99, model="sscd-distilled", sample=200, out="tune-out")  # doctest: +SKIP
>>> result.threshold, result.precision, result.recall                                            # doctest: +SKIP

Two sources of labels:

* **derived** (default): ``sample`` images drawn (seeded) from the folder become originals; each gets
  ``per_image`` variants (crops, recolours, rescans, overlays... :mod:`embeddr.bench`) that are its
  duplicates; up to ``negatives`` other images of the folder are treated as non-duplicates of everything.
  Everything is written to a benchmark folder (``out/bench`` or a temporary one) and measured by
  :func:`embeddr.evaluate.score_benchmark`. Real duplicates already in the folder would count as false
  pairs and drive the threshold up, so non-duplicate pairs between two images (or their variants)
  that already look like copies of each other (raw cosine >= the normalisation's copy ceiling, 0.9:
  2 in 18,023 non-duplicate pairs of the calibration split score that high) are set aside as
  unknown and counted in ``set_aside``. Looser real duplicates still count as false pairs, so the
  estimated precision remains a lower bound.
* **pairs**: a CSV of the user's own labelled pairs (columns ``a,b,label``; label ``1``/``dup``/``yes``/
  ``true`` or ``0``/``not``/``no``/``false``; paths absolute or relative to the CSV). The files in the
  CSV and the folder are scanned, so the normalised score has the collection as its background.

The threshold is the lowest one whose estimated precision is >= the target (the highest recall that
meets it), on the preset's default score (raw or normalised).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .bench.make import TruthRow
from .encoders import resolve_preset
from .evaluate import EvalError, PairScores
from .match import knn
from .normalize import DEFAULT_CEILING, Scorer
from .pipeline import scan_into

POSITIVE = {"1", "dup", "duplicate", "yes", "true", "y"}
NEGATIVE = {"0", "not", "not_duplicate", "no", "false", "n"}


@dataclass
class TuneResult:
    model: str
    score: str
    target: float
    threshold: float | None  # None: no threshold reaches the target
    precision: float
    recall: float
    positives: int
    negatives: int
    source: str  # "derived" or the pairs CSV
    default_threshold: float
    files: int = 0
    set_aside: int = 0  # non-duplicate pairs left out: the folder's own images already look like copies
    reused: int = 0  # vectors taken from an existing catalog instead of embedding the files again
    plots: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def read_pairs(path: str | os.PathLike) -> list[tuple[Path, Path, bool]]:
    """``(a, b, is_duplicate)`` rows of a labelled-pairs CSV (header a,b,label)."""
    path = Path(path)
    if not path.is_file():
        raise EvalError(f"--pairs {path}: no such file")
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"a", "b", "label"} <= set(reader.fieldnames or ()):
            raise EvalError(f"{path}: expected columns a,b,label; got {reader.fieldnames}")
        for n, r in enumerate(reader, start=2):
            lab = r["label"].strip().lower()
            if lab not in POSITIVE | NEGATIVE:
                raise EvalError(f"{path}:{n}: label {r['label']!r} is not 1/0 or dup/not")
            a, b = (Path(r[c]).expanduser() for c in ("a", "b"))
            a, b = (p if p.is_absolute() else path.resolve().parent / p for p in (a, b))
            for p in (a, b):
                if not p.is_file():
                    raise EvalError(f"{path}:{n}: no such file {p}")
            out.append((a.resolve(), b.resolve(), lab in POSITIVE))
    if not any(x[2] for x in out) or all(x[2] for x in out):
        raise EvalError(f"{path}: needs both duplicate and non-duplicate pairs")
    return out


def labelled_pair_scores(folder: Path, pairs_csv: Path, model, workers: int | None, db: Path) -> PairScores:
    from .catalog import Catalog
    from .index import load_index

    labelled = read_pairs(pairs_csv)
    files = sorted({p for a, b, _ in labelled for p in (a, b)})
    scan_into([folder, *files], db=db, model=model, workers=workers)
    with Catalog(db) as catalog:
        ids, vecs, hashes = catalog.live_vectors()
        index = load_index(catalog)
        scorer = Scorer.for_preset(resolve_preset(model), "normalized")  # the default decision's backgrounds
        nn_s, nn_i = knn(index, vecs, scorer.neighbours + 1) if len(ids) else (np.zeros((0, 0)), np.zeros((0, 0), np.int64))
        bg = scorer.backgrounds(ids, vecs, nn_s, nn_i)
        row_of_hash = {h: i for i, h in enumerate(hashes)}
        hash_of = {Path(f.path).resolve(): f.hash for f in catalog.files("ok")}
    idx = {p: i for i, p in enumerate(files)}
    vrow = np.array([row_of_hash.get(hash_of.get(p), -1) for p in files], np.int64)
    if (vrow < 0).any():
        bad = [str(p) for p, v in zip(files, vrow) if v < 0][:3]
        raise EvalError(f"{pairs_csv}: could not read {', '.join(bad)}")
    a = np.array([idx[x] for x, _, _ in labelled])
    b = np.array([idx[y] for _, y, _ in labelled])
    label = np.array([lab for _, _, lab in labelled], bool)
    raw = np.minimum(np.einsum("ij,ij->i", vecs[vrow[a]], vecs[vrow[b]]), 1.0).astype(np.float32)
    knn_scores = np.full((len(files), 0), -np.inf, np.float32)
    rows = [TruthRow(p, str(p), "user", "original") for p in files]
    preset = resolve_preset(model)
    return PairScores(detector=preset.name, preset=preset, rows=rows, a=a, b=b, label=label, raw=raw,
                      family=["pair" if lab else "other" for lab in label], knn_scores=knn_scores, vector_row=vrow,
                      n_positives=int(label.sum()), bg=bg[vrow])


def set_aside_existing_duplicates(ps: PairScores, ceiling: float = DEFAULT_CEILING) -> tuple[PairScores, int]:
    """Drop the non-duplicate pairs whose two sides come from images of the folder that already look like
    copies of each other (any pair across their groups at raw cosine >= ``ceiling``); returns the count."""
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.setdefault(g, g) != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    groups = [r.group for r in ps.rows]
    for i in np.flatnonzero(~ps.label & (ps.raw >= ceiling)):
        parent[find(groups[ps.a[i]])] = find(groups[ps.b[i]])
    drop = np.array([not lab and find(groups[a]) == find(groups[b]) for a, b, lab in zip(ps.a, ps.b, ps.label)], bool)
    if not drop.any():
        return ps, 0
    keep = ~drop
    return replace(ps, a=ps.a[keep], b=ps.b[keep], label=ps.label[keep], raw=ps.raw[keep],
                   family=[f for f, k in zip(ps.family, keep) if k]), int(drop.sum())
