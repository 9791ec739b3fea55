"""Measure a detector on a labelled benchmark (a ``truth.csv`` from :mod:`embeddr.bench`).

>>> from embeddr.evaluate import evaluate, write_report
>>> report = evaluate("bench/truth.csv", ["sscd-distilled", "phash", "dhash"])   # doctest: +SKIP
>>> write_report(report, "eval-out/")   # report.md, report.json, pr_curves.png, histograms.png  # doctest: +SKIP

For each detector the truth's files are scanned into a catalog through the normal pipeline
(:func:`embeddr.api.scan`), so evaluation exercises what users run. Then:

* **positives**: every pair of files of one truth group (original-derived and derived-derived), each
  scored directly (a positive the index would never return still counts as missed);
* **negatives**: for each file, its ``k`` nearest neighbours (FAISS kNN) outside its group. These are
  the hard negatives, the only ones that can reach a useful threshold: any non-duplicate pair scoring
  above an image's k-th neighbour is in that image's list, so counts above that level are complete.
  No N x N matrix is formed;
* both **raw** cosine and the **normalised** score (:mod:`embeddr.normalize`) of every pair.

Metrics per detector and score: average precision over pairs (all positives in the denominator),
recall at precision >= 0.99 and the lowest threshold that achieves it, precision / recall / F1 at the
operating threshold (the preset's calibrated default unless given), recall per transform family, and
false pairs at the threshold split by kind (``distractor``: a hard-negative photo involved;
``doc_page``: two pages of the made-up document or a scanned text page; ``other``: two unrelated
benchmark groups). ``pipeline`` re-counts the pairs that :func:`embeddr.dupes.find_duplicates` reports
with the preset's default score at the threshold (exact range search: every false pair counted).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .bench import read_truth, truth_pairs
from .bench.make import TruthRow
from .encoders import Encoder, resolve_preset
from .errors import EmbeddrError
from .match import knn
from .metrics import TARGET_PRECISION, average_precision, pr_curve, threshold_for_precision
from .pipeline import scan_into
from .normalize import DEFAULT_CEILING, Scorer, kth_background, normalize_scores
from .presets import Preset

SCORES = ("raw", "normalized")


class EvalError(EmbeddrError):
    """A benchmark that cannot be evaluated (bad truth file, no positives, no files scanned)."""


@dataclass
class PairScores:
    """Every scored pair of one detector on one benchmark (file indices into ``rows``)."""

    detector: str
    preset: Preset
    rows: list[TruthRow]
    a: np.ndarray
    b: np.ndarray
    label: np.ndarray  # bool: same truth group
    raw: np.ndarray
    family: list[str]  # positives: pair family; negatives: kind (distractor / doc_page / other)
    knn_scores: np.ndarray  # (n_files, K) raw scores of each file's neighbours (self excluded where found)
    vector_row: np.ndarray  # row of each file's vector in the scanned set (-1: not scanned, e.g. unreadable)
    n_positives: int
    scan: dict = field(default_factory=dict)
    catalog_path: str = ""
    bg: np.ndarray | None = None  # per-file backgrounds computed elsewhere (tune on labelled pairs)

    def background(self, k: int | None = None) -> np.ndarray:
        """bg of each file: the preset scorer's background (``bg``), or with ``k`` the k-th non-copy
        neighbour's score (-1 where fewer than k neighbours)."""
        if self.bg is not None and k is None:
            return self.bg
        if k is None:
            k = self.preset.normalize.k
        return kth_background(self.knn_scores, k, DEFAULT_CEILING)  # copies are not background

    def scores(self, score: str = "raw", *, k: int | None = None, beta: float | None = None,
               floor: float | None = None) -> np.ndarray:
        """Pair scores: ``raw`` cosine, or ``normalized`` with the preset's backgrounds and penalty (the
        default decision, as in dupes); ``k`` replays the collection background at another rank."""
        if score == "raw":
            return self.raw
        n = self.preset.normalize
        bg = self.background(k) if k is not None else self.background()
        return normalize_scores(self.raw, bg[self.a], bg[self.b], beta=n.beta if beta is None else beta,
                                floor=n.floor if floor is None else floor)


# ------------------------------------------------------------------------------------------------
# scanning and scoring
# ------------------------------------------------------------------------------------------------


def _negative_kind(ra: TruthRow, rb: TruthRow) -> str:
    fams = {ra.family, rb.family}
    if "doc_page" in fams:
        return "doc_page"
    if "distractor" in fams:
        return "distractor"
    return "other"


def score_benchmark(truth: str | os.PathLike, detector: str | Preset | Encoder, *, db: str | os.PathLike | None = None,
                    k: int = 30, workers: int | None = None, batch_size: int = 64, device: str = "auto",
                    checkpoint: str | os.PathLike | None = None, rows: list[TruthRow] | None = None) -> PairScores:
    """Scan the truth's files with ``detector`` into ``db`` (a temporary catalog when None) and score
    every positive pair and each file's ``k`` nearest non-duplicates."""
    from .catalog import Catalog
    from .index import load_index

    truth = Path(truth)
    rows = rows if rows is not None else read_truth(truth)
    if not rows:
        raise EvalError(f"{truth}: no files")
    encoder = detector if isinstance(detector, Encoder) else None
    preset = encoder.preset if encoder is not None else resolve_preset(detector)
    tmp = None
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="embeddr_eval_")
        db = Path(tmp.name) / "eval.db"
    try:
        t0 = time.perf_counter()
        roots = sorted({str(r.path) for r in rows})
        report = scan_into(roots, db=db, model=preset, encoder=encoder, workers=workers, batch_size=batch_size,
                          device=device, checkpoint=checkpoint)
        scan_info = {"seconds": round(time.perf_counter() - t0, 2), "encoded": report.encoded, "errors": report.errors,
                     "images_per_second": report.as_dict()["images_per_second"]}
        with Catalog(db) as catalog:
            ids, vecs, hashes = catalog.live_vectors()
            row_of_vid = {int(v): i for i, v in enumerate(ids)}
            hash_row = {h: row_of_vid[int(v)] for v, h in zip(ids, hashes)}
            file_hash = {Path(f.path).resolve(): f.hash for f in catalog.files("ok")}
            index = load_index(catalog)
            vrow = np.array([hash_row.get(file_hash.get(Path(r.path).resolve()), -1) for r in rows], np.int64)
            # the preset's own scorer gives each vector its default-decision background (as in dupes)
            scorer = Scorer.for_preset(preset, "normalized")
            want = min(max(k, scorer.neighbours) + 1, index.ntotal)
            nn_all, lab_all = knn(index, vecs, want) if len(ids) else (np.zeros((0, 0)), np.zeros((0, 0), np.int64))
            bg_vec = scorer.backgrounds(ids, vecs, nn_all, lab_all) if len(ids) else np.zeros(0, np.float32)
            kk = min(k + 1, index.ntotal)
            nn_scores, nn_labels = nn_all[:, :kk], lab_all[:, :kk]
            catalog_path = str(catalog.path)
    finally:
        if tmp is not None:
            tmp.cleanup()

    n = len(rows)
    # files of each vector row (exact copies share a vector)
    files_of_vrow: dict[int, list[int]] = {}
    for i, v in enumerate(vrow):
        if v >= 0:
            files_of_vrow.setdefault(int(v), []).append(i)
    idx_of_path = {r.path: i for i, r in enumerate(rows)}

    # per-file neighbour scores, self excluded, for backgrounds (vector rows not in this truth are skipped)
    knn_file = np.full((n, max(kk - 1, 0)), -np.inf, np.float32)
    neg: set[tuple[int, int]] = set()
    for v, files in files_of_vrow.items():
        got = []
        for lab, s in zip(nn_labels[v], nn_scores[v]):
            r = row_of_vid.get(int(lab))
            if r is None or r == v:
                continue
            got.append(float(s))
            for fa in files:
                for fb in files_of_vrow.get(r, ()):
                    if rows[fa].group != rows[fb].group:
                        neg.add((min(fa, fb), max(fa, fb)))
        got = got[: knn_file.shape[1]]
        for fa in files:
            knn_file[fa, : len(got)] = got
    for files in files_of_vrow.values():  # exact copies in different groups: negatives of score 1
        for x in range(len(files)):
            for y in range(x + 1, len(files)):
                if rows[files[x]].group != rows[files[y]].group:
                    neg.add((files[x], files[y]))

    pos = truth_pairs(rows)
    if not pos:
        raise EvalError(f"{truth}: no positive pairs (no group has two files)")
    a_list, b_list, lab_list, fam_list = [], [], [], []
    for pair, fam in sorted(pos.items(), key=lambda kv: sorted(map(str, kv[0]))):
        x, y = sorted(idx_of_path[p] for p in pair)
        a_list.append(x), b_list.append(y), lab_list.append(True), fam_list.append(fam)
    for x, y in sorted(neg):
        a_list.append(x), b_list.append(y), lab_list.append(False), fam_list.append(_negative_kind(rows[x], rows[y]))
    a = np.array(a_list, np.int64)
    b = np.array(b_list, np.int64)
    raw = np.full(len(a), -np.inf, np.float32)
    ok = (vrow[a] >= 0) & (vrow[b] >= 0)
    sel = np.flatnonzero(ok)
    for start in range(0, len(sel), 8192):
        part = sel[start : start + 8192]
        raw[part] = np.einsum("ij,ij->i", vecs[vrow[a[part]]], vecs[vrow[b[part]]])
    raw = np.minimum(raw, 1.0)
    return PairScores(detector=preset.name if encoder is None else encoder.name, preset=preset, rows=rows, a=a, b=b,
                      label=np.array(lab_list, bool), raw=raw, family=fam_list, knn_scores=knn_file,
                      vector_row=vrow, n_positives=len(pos), scan=scan_info, catalog_path=catalog_path,
                      bg=np.where(vrow >= 0, bg_vec[np.maximum(vrow, 0)] if len(bg_vec) else -1.0, -1.0).astype(np.float32))


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------


def metrics_at(ps: PairScores, score: np.ndarray, threshold: float) -> dict:
    hit = score >= threshold - 1e-6
    tp = int((hit & ps.label).sum())
    fp = int((hit & ~ps.label).sum())
    fn = ps.n_positives - tp
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / ps.n_positives if ps.n_positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_family: dict[str, dict] = {}
    fams = Counter(f for f, lab in zip(ps.family, ps.label) if lab)
    found = Counter(f for f, lab, h in zip(ps.family, ps.label, hit) if lab and h)
    for f in sorted(fams):
        per_family[f] = {"pairs": fams[f], "found": found[f], "recall": round(found[f] / fams[f], 4)}
    false = Counter(f for f, lab, h in zip(ps.family, ps.label, hit) if h and not lab)
    worst = np.flatnonzero(hit & ~ps.label)
    worst = worst[np.argsort(-score[worst], kind="stable")][:5]
    return {
        "threshold": round(float(threshold), 6), "tp": tp, "fp": fp, "fn": fn, "precision": round(precision, 4),
        "recall": round(recall, 4), "f1": round(f1, 4), "per_family": per_family,
        "false_pairs": {kind: false.get(kind, 0) for kind in ("distractor", "doc_page", "other")},
        "worst_false_pairs": [{"a": str(ps.rows[ps.a[i]].path), "b": str(ps.rows[ps.b[i]].path),
                               "score": round(float(score[i]), 4), "kind": ps.family[i]} for i in worst],
    }


def score_metrics(ps: PairScores, score_name: str, threshold: float, *, target: float = TARGET_PRECISION,
                  **norm) -> dict:
    s = ps.scores(score_name, **norm)
    thr, precision, recall = pr_curve(ps.label, s, ps.n_positives)
    t_at, p_at, r_at = threshold_for_precision(ps.label, s, target, ps.n_positives)
    return {
        "score": score_name,
        "ap": round(average_precision(precision, recall), 4),
        "recall_at_precision": {"target": target, "recall": round(r_at, 4), "precision": round(p_at, 4),
                                "threshold": None if t_at is None else round(t_at, 6)},
        "at_threshold": metrics_at(ps, s, threshold),
    }


def pipeline_metrics(ps: PairScores, threshold: float, score: str) -> dict:
    """P/R of the pairs :func:`embeddr.dupes.find_duplicates` reports (exact range search)."""
    from .catalog import Catalog
    from .dupes import find_duplicates

    if not ps.catalog_path or not Path(ps.catalog_path).exists():
        return {}
    group_of = {str(r.path.resolve()): r.group for r in ps.rows}
    with Catalog(ps.catalog_path) as catalog:
        rep = find_duplicates(catalog, ps.preset, threshold=threshold, score=score)
    pairs = [(p.a, p.b) for p in rep.pairs if str(Path(p.a).resolve()) in group_of and str(Path(p.b).resolve()) in group_of]
    tp = sum(group_of[str(Path(x).resolve())] == group_of[str(Path(y).resolve())] for x, y in pairs)
    fp = len(pairs) - tp
    grouped_wrong = 0
    for g in rep.groups:
        truth_groups = Counter(group_of.get(str(Path(m.path).resolve()), "?") for m in g.members)
        grouped_wrong += len(g.members) - max(truth_groups.values())
    return {"score": score, "threshold": threshold, "pairs": len(pairs), "tp": tp, "fp": fp,
            "precision": round(tp / len(pairs), 4) if pairs else 1.0, "recall": round(tp / ps.n_positives, 4),
            "groups": len(rep.groups), "files_in_wrong_group": grouped_wrong}


# ------------------------------------------------------------------------------------------------
# the whole run
# ------------------------------------------------------------------------------------------------


@dataclass
class EvalReport:
    truth: str
    files: int
    positives: int
    k: int
    detectors: list[dict]
    pair_scores: list[PairScores] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict:
        return {"truth": self.truth, "files": self.files, "positive_pairs": self.positives, "k": self.k,
                "normalization": {ps.detector: asdict(ps.preset.normalize) for ps in self.pair_scores},
                "detectors": self.detectors}


def evaluate_scores(ps: PairScores, *, threshold: float | None = None, target: float = TARGET_PRECISION,
                    pipeline: bool = True) -> dict:
    """The report entry of one detector from its pair scores."""
    preset = ps.preset
    t = preset.threshold.value if threshold is None else float(threshold)
    out = {
        "detector": ps.detector, "default_score": preset.score, "threshold": t,
        "threshold_provisional": preset.threshold.provisional, "threshold_provenance": preset.threshold.provenance,
        "scan": ps.scan, "negatives_scored": int((~ps.label).sum()),
        "scores": {name: score_metrics(ps, name, t, target=target) for name in SCORES},
    }
    if pipeline:
        out["pipeline"] = pipeline_metrics(ps, t, preset.score)
    return out


def evaluate(truth: str | os.PathLike, detectors, *, threshold: float | None = None, workdir: str | os.PathLike | None = None,
             k: int = 30, workers: int | None = None, target: float = TARGET_PRECISION, device: str = "auto",
             checkpoint: str | os.PathLike | None = None, progress=None) -> EvalReport:
    """Evaluate each of ``detectors`` (preset names, Presets or Encoders) on ``truth``.

    ``threshold`` overrides the operating threshold of the first detector only (baselines keep
    their own). ``workdir``: keep one catalog per detector there (re-runs reuse the vectors).
    """
    truth = Path(truth)
    if not truth.is_file():
        raise EvalError(f"{truth}: no such truth file (make one with `embeddr bench make SRC OUT`)")
    try:
        rows = read_truth(truth)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    if isinstance(detectors, (str, Preset, Encoder)):
        detectors = [detectors]
    entries, all_ps = [], []
    seen: set[str] = set()
    for i, det in enumerate(detectors):
        name = det.name if isinstance(det, (Preset, Encoder)) else str(det)
        if name in seen:
            continue
        seen.add(name)
        if progress:
            progress(f"scanning {len(rows)} files with {name}")
        db = None
        if workdir is not None:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            db = Path(workdir) / f"{Path(name).name}.db"
        ps = score_benchmark(truth, det, db=db, k=k, workers=workers, rows=rows, device=device,
                             checkpoint=checkpoint if i == 0 else None)
        if db is None:
            ps.catalog_path = ""
        entries.append(evaluate_scores(ps, threshold=threshold if i == 0 else None, target=target,
                                       pipeline=db is not None))
        all_ps.append(ps)
    return EvalReport(truth=str(truth), files=len(rows), positives=all_ps[0].n_positives, k=k, detectors=entries,
                      pair_scores=all_ps)


# ------------------------------------------------------------------------------------------------
# output
# ------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(report: EvalReport) -> str:
    d = report.as_dict()
    lines = [f"# embeddr eval: {d['truth']}", "",
             f"{d['files']} files, {d['positive_pairs']} duplicate pairs; negatives: each file's {d['k']} nearest "
             "non-duplicates. Precision/recall over pairs; '*' marks each detector's default score.", "",
             "| detector | score | AP | recall @ P>=0.99 (thr) | threshold | precision | recall | F1 | false pairs: hard neg / doc pages / other |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in d["detectors"]:
        for name in SCORES:
            m = e["scores"][name]
            at = m["at_threshold"]
            rp = m["recall_at_precision"]
            thr = "-" if rp["threshold"] is None else f"{rp['threshold']:.3f}"
            star = "*" if name == e["default_score"] else ""
            prov = " (provisional)" if e["threshold_provisional"] else ""
            fpk = at["false_pairs"]
            lines.append(f"| {e['detector']} | {name}{star} | {m['ap']:.3f} | {_pct(rp['recall'])} % ({thr}) | "
                         f"{at['threshold']:.4g}{prov} | {_pct(at['precision'])} % | {_pct(at['recall'])} % | {at['f1']:.3f} | "
                         f"{fpk['distractor']} / {fpk['doc_page']} / {fpk['other']} |")
    fams = sorted({f for e in d["detectors"] for f in e["scores"]["raw"]["at_threshold"]["per_family"]})
    lines += ["", "Recall per family at the threshold (%):", "",
              "| detector | score | " + " | ".join(fams) + " |", "|---|---|" + "---|" * len(fams)]
    for e in d["detectors"]:
        for name in SCORES:
            pf = e["scores"][name]["at_threshold"]["per_family"]
            cells = [_pct(pf[f]["recall"]) if f in pf else "-" for f in fams]
            star = "*" if name == e["default_score"] else ""
            lines.append(f"| {e['detector']} | {name}{star} | " + " | ".join(cells) + " |")
    pipes = [e for e in d["detectors"] if e.get("pipeline")]
    if pipes:
        lines += ["", "`embeddr dupes` with each preset's default score at the threshold (exact range search):", "",
                  "| detector | score | pairs | precision | recall | groups | files in a wrong group |", "|---|---|---|---|---|---|---|"]
        for e in pipes:
            p = e["pipeline"]
            lines.append(f"| {e['detector']} | {p['score']} | {p['pairs']} | {_pct(p['precision'])} % | {_pct(p['recall'])} % | "
                         f"{p['groups']} | {p['files_in_wrong_group']} |")
    lines += ["", "Thresholds (provenance in report.json): " + "; ".join(
        f"{e['detector']} {e['threshold']:g} ({'provisional' if e['threshold_provisional'] else 'calibrated'})"
        for e in d["detectors"])]
    return "\n".join(lines) + "\n"


def write_report(report: EvalReport, out: str | os.PathLike, *, plots: bool = True) -> dict[str, Path]:
    """Write report.md, report.json and (``plots``) pr_curves.png and histograms.png into ``out``."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "json": out / "report.json"}
    paths["markdown"].write_text(markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
    if plots:
        from .plots import histograms, pr_curves

        paths["pr_curves"] = pr_curves(report.pair_scores, out / "pr_curves.png")
        paths["histograms"] = histograms(report.pair_scores, out / "histograms.png")
    return paths
