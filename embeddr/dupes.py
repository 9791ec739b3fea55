"""From a catalog to duplicate groups: match -> (normalise) -> group, at the file level.

Exact duplicates (same content hash) are pairs of score 1.0 and kind ``exact``; pairs of
distinct contents found by the index are kind ``near``. Reviewer verdicts
(``not_duplicate``) remove pairs before grouping, so they hold for every later command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .catalog import Catalog, FileRow
from .index import load_index, stored
from .match import approximate_index, range_pairs
from .presets import Preset


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    score: float
    kind: str  # "exact" | "near"

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "score": round(self.score, 6), "kind": self.kind}


@dataclass
class Group:
    id: int
    members: list[FileRow]
    min_score: float  # lowest score between two members (how borderline the group is)
    max_score: float

    def as_dict(self) -> dict:
        return {"id": self.id, "size": len(self.members), "min_score": round(self.min_score, 6),
                "max_score": round(self.max_score, 6), "members": [m.as_dict() for m in self.members]}


@dataclass
class DuplicateReport:
    model: str
    threshold: float
    score: str  # "raw" | "normalized"
    groups: list[Group]
    pairs: list[Pair]
    files: int = 0  # ok files considered
    threshold_provenance: str = ""
    extra: dict = field(default_factory=dict)
    file_rows: list[FileRow] = field(default_factory=list, repr=False, compare=False)  # every ok file considered (not serialised)

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "threshold": self.threshold,
            "score": self.score,
            "threshold_provenance": self.threshold_provenance,
            "files": self.files,
            "duplicate_files": sum(len(g.members) - 1 for g in self.groups),
            "groups": [g.as_dict() for g in self.groups],
            "pairs": [p.as_dict() for p in self.pairs],
            **self.extra,
        }


def find_duplicates(catalog: Catalog, preset: Preset, *, threshold: float | None = None, score: str | None = None,
                    margin: float | None = None, chunk: int = 2048, approximate: bool = False) -> DuplicateReport:
    """Every pair at or above ``threshold`` among the catalog's ``ok`` files, and their groups.

    ``approximate``: search an IVF index instead of the exact one (:func:`embeddr.match.approximate_index`):
    much faster on millions of images, may miss a few pairs.
    """
    threshold = preset.threshold.value if threshold is None else float(threshold)
    score = score or preset.score
    margin = preset.threshold.group_margin if margin is None else margin
    by_hash = catalog.files_by_hash("ok")
    files = sum(len(v) for v in by_hash.values())
    vid_of_hash = catalog.live_vector_ids()
    hash_of = {vid: h for h, vid in vid_of_hash.items()}
    rejected = catalog.not_duplicate_pairs()

    # Query vectors are read straight from the index's storage (no second copy of every vector);
    # vectors that no current file uses are left out of the queries and of the matches.
    index = load_index(catalog)
    stored_ids, stored_vecs = stored(index)
    live: set[int] | None = None  # None: every stored vector is live (the index holds all catalog vectors)
    if len(hash_of) == len(stored_ids):
        ids, vecs = stored_ids, stored_vecs
    else:
        live = set(hash_of)
        keep = np.flatnonzero(np.isin(stored_ids, np.fromiter(hash_of, np.int64, len(hash_of))))
        ids, vecs = stored_ids[keep], stored_vecs[keep]

    def vector(vid: int) -> np.ndarray:
        return stored_vecs[int(np.searchsorted(stored_ids, vid))]

    content_pairs: list[tuple[int, int, float]] = []
    search_index, search = index, {"search": "exact"}  # `index` stays referenced: stored_vecs is a view into it
    if len(ids) and approximate:
        search_index = approximate_index(stored_ids, stored_vecs)
        search = {"search": "approximate", "nlist": int(search_index.nlist), "nprobe": int(search_index.nprobe)}
    if len(ids):
        if score == "normalized":
            from .normalize import normalized_pairs

            content_pairs = list(normalized_pairs(search_index, ids, vecs, threshold, chunk=chunk, live=live))
        else:
            content_pairs = list(range_pairs(search_index, ids, vecs, threshold, chunk=chunk, live=live))

    pairs: list[Pair] = []
    for h, rows in by_hash.items():
        for x, y in combinations(sorted(rows, key=lambda r: r.path), 2):
            pairs.append(Pair(x.path, y.path, 1.0, "exact"))
    for va, vb, s in content_pairs:
        for x in by_hash.get(hash_of[va], ()):
            for y in by_hash.get(hash_of[vb], ()):
                a, b = sorted((x.path, y.path))
                pairs.append(Pair(a, b, s, "near"))
    pairs = [p for p in pairs if (p.a, p.b) not in rejected]
    pairs.sort(key=lambda p: (-p.score, p.a, p.b))

    row_of = {r.path: r for rows in by_hash.values() for r in rows}
    raw_cache: dict[tuple[str, str], float] = {}

    def similarity(a: str, b: str) -> float:
        if (min(a, b), max(a, b)) in rejected:
            return -1.0
        ha, hb = row_of[a].hash, row_of[b].hash
        if ha == hb:
            return 1.0
        key = (ha, hb)
        if key not in raw_cache:
            raw_cache[key] = float(np.dot(vector(vid_of_hash[ha]), vector(vid_of_hash[hb])))
        return raw_cache[key]

    from .group import group_pairs

    pair_score = {(p.a, p.b): p.score for p in pairs}
    # normalised scores are in raw-cosine units and never above the raw score (embeddr.normalize), so one
    # floor serves both: listed pairs carry their (normalised) score, unlisted ones their raw cosine
    floor = threshold - margin
    raw_groups = group_pairs(((p.a, p.b, p.score) for p in pairs), floor=floor, similarity=similarity)
    groups: list[Group] = []
    for gid, paths in enumerate(raw_groups, start=1):
        scores = [pair_score.get((a, b)) or similarity(a, b) for a, b in combinations(sorted(paths), 2)]
        groups.append(Group(gid, [row_of[p] for p in paths], min(scores), max(scores)))
    return DuplicateReport(model=preset.name, threshold=threshold, score=score, groups=groups, pairs=pairs, extra=search,
                           files=files, threshold_provenance=preset.threshold.provenance,
                           file_rows=list(row_of.values()))
