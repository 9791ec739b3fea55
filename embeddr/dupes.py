"""From a catalog to duplicate groups: match -> (normalise) -> group, at the file level.

Exact duplicates (same content hash) are pairs of score 1.0 and kind ``exact``; pairs of
distinct contents found by the index are kind ``near``. Reviewer verdicts
(``not_duplicate``) remove pairs before grouping, so they hold for every later command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .catalog import Catalog, FileRow
from .presets import Preset


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    score: float
    kind: str  # "exact" | "near"
    a_id: str | None = None  # the manifest ids of a and b (None for a plain scan)
    b_id: str | None = None
    verified: bool | None = None  # True: a pair below the threshold kept by the second look (embeddr.verify)

    def as_dict(self) -> dict:
        d = {"a": self.a, "b": self.b, "score": round(self.score, 6), "kind": self.kind}
        if self.a_id is not None or self.b_id is not None:
            d["a_id"], d["b_id"] = self.a_id, self.b_id
        if self.verified is not None:
            d["verified"] = self.verified
        return d


@dataclass
class Group:
    id: int
    members: list[FileRow]
    min_score: float  # lowest score between two members (how borderline the group is)
    max_score: float

    def as_dict(self) -> dict:
        return {"id": self.id, "size": len(self.members), "min_score": round(self.min_score, 6),
                "max_score": round(self.max_score, 6), "members": [m.as_dict() for m in self.members]}


class _LazyPairs(Sequence):
    """A sequence of pairs that iterating streams (:meth:`_stream`) and indexing builds once; ``len`` counts
    without building it (:meth:`_count`, or by streaming when reviewer verdicts leave some pairs out)."""

    _list: list | None = None
    _len: int | None = None
    _rejected: set[tuple[str, str]]  # set by each subclass

    def _stream(self) -> Iterator[Pair]:
        raise NotImplementedError

    def _count(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Pair]:
        if self._list is not None:
            return iter(self._list)
        return self._stream()

    def __len__(self) -> int:
        if self._list is not None:
            return len(self._list)
        if self._len is None:
            self._len = sum(1 for _ in self) if self._rejected else self._count()
        return self._len

    def __getitem__(self, i):
        if self._list is None:
            self._list = list(iter(self))
        return self._list[i]

    def __eq__(self, other) -> bool:
        return list(self) == list(other)


class PairList(_LazyPairs):
    """Every file pair of a report, expanded from *content* pairs as it is iterated: exact copies (same
    bytes, score 1.0) first, then near pairs best first. Iterating holds no list of all pairs; indexing
    builds it once. ``len`` counts without building it."""

    def __init__(self, by_hash: dict[str, list[FileRow]], node_pairs: list[tuple[str, str, float]],
                 rejected: set[tuple[str, str]], verified: set[tuple[str, str]] | None = None) -> None:
        self._by_hash, self._rejected = by_hash, rejected
        self._verified = verified
        first = {h: rows[0].path for h, rows in by_hash.items() if rows}
        self._node_pairs = sorted(node_pairs, key=lambda t: (-t[2], first[t[0]], first[t[1]]))

    def _stream(self) -> Iterator[Pair]:
        by_hash, rejected = self._by_hash, self._rejected
        for h in sorted(h for h, rows in by_hash.items() if len(rows) > 1):
            for x, y in combinations(by_hash[h], 2):  # rows are sorted by path
                if (x.path, y.path) not in rejected:
                    yield Pair(x.path, y.path, 1.0, "exact", x.item_id, y.item_id)
        verified = self._verified
        for hx, hy, v in self._node_pairs:
            checked = True if verified and (hx, hy) in verified else None
            for x in by_hash.get(hx, ()):
                for y in by_hash.get(hy, ()):
                    a, b = sorted((x, y), key=lambda r: r.path)
                    if (a.path, b.path) not in rejected:
                        yield Pair(a.path, b.path, v, "near", a.item_id, b.item_id, checked)

    def _count(self) -> int:
        n = sum(len(r) * (len(r) - 1) // 2 for r in self._by_hash.values())
        return n + sum(len(self._by_hash.get(x, ())) * len(self._by_hash.get(y, ())) for x, y, _ in self._node_pairs)


class _Files:
    """The paths (and manifest ids) of the files of contents ``0 .. n-1``, compactly: the paths as one UTF-8 blob
    with offsets (about the bytes of the paths; no Python object per file), each content's files sorted by path."""

    def __init__(self, n: int, rows: Iterable[tuple[int, str, str | None]]):
        from array import array

        keys, ends, blob, self.items = array("q"), array("q"), bytearray(), {}
        for i, path, item in rows:
            if item is not None:
                self.items[len(keys)] = item
            keys.append(i)
            blob += path.encode("utf-8", "surrogateescape")
            ends.append(len(blob))
        keys = np.frombuffer(keys, np.int64) if len(keys) else np.zeros(0, np.int64)
        self.ends = np.frombuffer(ends, np.int64) if len(ends) else np.zeros(0, np.int64)
        self.starts = np.concatenate([[0], self.ends[:-1]]).astype(np.int64)
        self.blob = bytes(blob)
        order = np.argsort(keys, kind="stable")
        self.offset = np.searchsorted(keys[order], np.arange(n + 1))  # content i: order[offset[i]:offset[i+1]]
        self.count = np.diff(self.offset)
        for i in np.flatnonzero(self.count > 1).tolist():  # copies: sorted by path, as Python orders them
            seg = order[self.offset[i] : self.offset[i + 1]].tolist()
            order[self.offset[i] : self.offset[i + 1]] = sorted(seg, key=self.path)
        self.order = order

    def path(self, r: int) -> str:
        return self.blob[self.starts[r] : self.ends[r]].decode("utf-8", "surrogateescape")

    def rows(self, i: int) -> list[int]:
        """The row numbers of content ``i``'s files, by path."""
        return self.order[self.offset[i] : self.offset[i + 1]].tolist()

    def first(self, i: int) -> str | None:
        return self.path(int(self.order[self.offset[i]])) if self.count[i] else None


class PairStream(_LazyPairs):
    """Every file pair of a report, in :class:`PairList`'s order (exact copies first, then near pairs best first;
    ties by the first path of each side), expanded from *content* pairs held as arrays (node ids of ``nodes``,
    float32 scores) as it is iterated: no list of all pairs is held, and the files' paths are kept compactly
    (:class:`_Files`), read once from the catalog when the report is made. Indexing builds the list once;
    ``len`` counts without building it."""

    CHUNK = 65536  # pairs converted from the arrays at a time

    def __init__(self, catalog: Catalog, nodes: np.ndarray, a: np.ndarray, b: np.ndarray, s: np.ndarray,
                 confirmed: np.ndarray, copied: list[str], rejected: set[tuple[str, str]]) -> None:
        self._rejected = rejected
        files = _Files(len(nodes), ((int(np.searchsorted(nodes, vid)), path, item)
                                    for vid, path, item in catalog.paths_of_ids(nodes.tolist())))
        keys = [(f is None, f or "") for f in map(files.first, range(len(nodes)))]  # transient: a string a content
        first_rank = np.empty(len(nodes), np.int64)
        first_rank[np.array(sorted(range(len(nodes)), key=keys.__getitem__), np.int64)] = np.arange(len(nodes))
        del keys
        order = np.lexsort((first_rank[b], first_rank[a], -s)) if len(s) else np.zeros(0, np.int64)
        self._a, self._b, self._s, self._confirmed = a[order], b[order], s[order], confirmed[order]
        self._files = files

        def copy_rows():
            for i in range(0, len(copied), 500):
                chunk = copied[i : i + 500]
                by_hash = catalog.rows_for_hashes(chunk)
                for j, h in enumerate(chunk, start=i):
                    for r in by_hash.get(h, ()):
                        yield j, r.path, r.item_id

        self._copies = _Files(len(copied), copy_rows())
        self._near = int((files.count[self._a] * files.count[self._b]).sum()) if len(order) else 0

    def _stream(self) -> Iterator[Pair]:
        rejected, copies = self._rejected, self._copies
        for i in np.flatnonzero(copies.count > 1).tolist():
            for x, y in combinations(copies.rows(i), 2):  # rows are sorted by path
                px, py = copies.path(x), copies.path(y)
                if (px, py) not in rejected:
                    yield Pair(px, py, 1.0, "exact", copies.items.get(x), copies.items.get(y))
        files, items, chunk = self._files, self._files.items, self.CHUNK
        for i in range(0, len(self._a), chunk):
            na, nb = self._a[i : i + chunk], self._b[i : i + chunk]
            single = (files.count[na] == 1) & (files.count[nb] == 1)
            ra = np.where(single, files.order[files.offset[na]], -1).tolist()
            rb = np.where(single, files.order[files.offset[nb]], -1).tolist()
            for x, y, r, q, v, c in zip(na.tolist(), nb.tolist(), ra, rb, self._s[i : i + chunk].tolist(),
                                        self._confirmed[i : i + chunk].tolist()):
                checked = True if c else None
                for ix in (files.rows(x) if r < 0 else (r,)):
                    px = files.path(ix)
                    for iy in (files.rows(y) if q < 0 else (q,)):
                        py = files.path(iy)
                        if py < px:
                            pa, pb, ia, ib = py, px, items.get(iy), items.get(ix)
                        else:
                            pa, pb, ia, ib = px, py, items.get(ix), items.get(iy)
                        if (pa, pb) not in rejected:
                            yield Pair(pa, pb, v, "near", ia, ib, checked)

    def _count(self) -> int:
        c = self._copies.count
        return int((c * (c - 1) // 2).sum()) + self._near


@dataclass
class DuplicateReport:
    model: str
    threshold: float
    score: str  # "raw" | "normalized"
    groups: list[Group]
    pairs: Sequence[Pair]  # a list, or a PairList that expands content pairs to file pairs as it is read
    files: int = 0  # ok files considered
    threshold_provenance: str = ""
    extra: dict = field(default_factory=dict)
    file_rows: list[FileRow] = field(default_factory=list, repr=False, compare=False)  # every ok file considered (not serialised)

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, Iterator) else v for k, v in self.as_stream().items()}

    def as_stream(self) -> dict:
        """:meth:`as_dict` with the groups and pairs as iterators (:func:`embeddr.output.stream_json` writes
        them a group or a pair at a time)."""
        return {
            "model": self.model,
            "threshold": self.threshold,
            "score": self.score,
            "threshold_provenance": self.threshold_provenance,
            "files": self.files,
            "duplicate_files": sum(len(g.members) - 1 for g in self.groups),
            "groups": (g.as_dict() for g in self.groups),
            "pairs": (p.as_dict() for p in self.pairs),
            **self.extra,
        }


def pair_decision(scorer, threshold: float, reader: Callable[[np.ndarray], np.ndarray], ref: np.ndarray):
    """``(decide, core)``: which of a join's candidate pairs the decision lists (:data:`embeddr.search.DecideFn`),
    judged with the join's per-row collection part of the background and, for the pairs that part leaves in, the
    reference part too (``scorer.reference_background`` of ``reader(rows)``, cached in ``ref``, NaN where not yet
    computed); and ``core``, the same without the far look's candidates (pairs listed for their raw cosine alone,
    :meth:`embeddr.normalize.Scorer.with_far`), on which the approximate search's recall target holds (``None``
    without a far look)."""

    def whole(per_row: np.ndarray, rows_: np.ndarray) -> np.ndarray:
        """The background (both parts) of ``rows_``."""
        todo = np.unique(rows_)
        todo = todo[np.isnan(ref[todo])]
        for s in range(0, len(todo), 16384):
            r = todo[s : s + 16384]
            ref[r] = scorer.reference_background(reader(r))
        return np.maximum(per_row[rows_], ref[rows_])

    def decider(sc):
        def decide(a: np.ndarray, b: np.ndarray, raw: np.ndarray, per_row: np.ndarray) -> np.ndarray:
            keep = sc.listed(raw, sc.score(raw, per_row[a], per_row[b]), threshold)  # at most the pairs kept
            if sc.normalized and sc.has_reference and keep.any():
                ka, kb = a[keep], b[keep]
                bg = whole(per_row, np.concatenate([ka, kb]))
                keep[keep] = sc.listed(raw[keep], sc.score(raw[keep], bg[: len(ka)], bg[len(ka) :]), threshold)
            return keep

        return decide

    return decider(scorer), decider(scorer.with_far(None)) if scorer.far_raw is not None else None


def content_pairs(catalog: Catalog, scorer, threshold: float, *, search: str = "auto",
                  live_ids: np.ndarray | None = None, device: str = "auto", references: dict | None = None):
    """The one search path of every command that lists pairs (dupes, apply, report, review), on the search
    structure kept beside the catalog (:mod:`embeddr.searchindex`): ``(a, b, score, bg, info, index)`` where
    ``a < b`` are vector ids of the distinct contents whose score (``scorer``) is at or above ``threshold`` (or
    whose raw cosine reaches the scorer's ``far_raw``, :meth:`embeddr.normalize.Scorer.with_far`),
    ``bg`` the background of each of ``live_ids`` (sorted; default: every live vector), ``info`` what search ran
    (with the approximate search's sampled recall estimate) and ``index`` the search structure. Vectorised:
    no Python loop per candidate pair.

    ``search``: ``exact``, ``approximate`` or ``auto`` (exact below :data:`embeddr.search.EXACT_BELOW` vectors,
    the k-means self-join above). ``device``: where the approximate join runs (``auto``: a GPU when torch sees
    one, :func:`embeddr.search.search_device`). ``references``: a dict to receive the reference part of the
    background where it was computed (``ids``: sorted vector ids, ``values``), for later use of the same numbers.
    """
    from . import search as engine
    from .normalize import NO_BACKGROUND
    from .searchindex import open_index

    index = open_index(catalog)
    if live_ids is None:
        live_ids = np.sort(np.fromiter(catalog.live_vector_ids().values(), np.int64))
    rows = index.rows_of(live_ids)
    k = scorer.neighbours if scorer.normalized else 0

    # The background is max(collection part, reference part) and a pair's score only falls as a background
    # rises, so the join gives each row its collection part (from the neighbours it found), a pair whose score
    # is below the threshold with that alone is out, and the reference-set search runs only for the rows of the
    # pairs left (a minority: most candidate pairs are in crowds the collection part already rules out).
    ref = np.full(len(index), np.nan, np.float32)  # the reference part, where computed
    reader = engine.RowReader(index.vecs)  # random rows without mapping the whole file (engine._Gather)

    def neighbours(q: np.ndarray, nn_scores: np.ndarray) -> np.ndarray:
        return scorer.backgrounds_of_others(None, nn_scores)  # the collection part (no reference set)

    decide, core = pair_decision(scorer, threshold, reader, ref)

    if search == "approximate":
        index = index.with_layout()
    if len(rows) < 2:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0, np.float32), np.full(len(rows), NO_BACKGROUND, np.float32), {"search": "exact"}, index
    dev, joiner, exact = engine.search_device(device, len(rows)), None, None
    if dev != "cpu":  # the same join, and the recall estimate's exact check, with torch on the GPU
        from functools import partial

        from .search_torch import cluster_join, exact_pairs

        joiner, exact = partial(cluster_join, device=dev), partial(exact_pairs, device=dev)
    result = engine.join(index.vecs, scorer.min_raw(threshold), k, neighbours, decide, rows=rows,
                         layout=index.layout, method=search, joiner=joiner, summary=scorer.summary, core=core,
                         exact=exact)
    per_row = result.per_row if k else np.full(len(result.per_row), NO_BACKGROUND, np.float32)
    keep = decide(result.a, result.b, result.raw, per_row)
    a, b, raw = result.a[keep], result.b[keep], result.raw[keep]
    bg = np.where(np.isnan(ref), per_row, np.maximum(per_row, ref))  # rows of no kept pair: collection part only
    if references is not None:
        done = np.flatnonzero(~np.isnan(ref))
        references["ids"], references["values"] = index.ids[done], ref[done]
    scores = scorer.score(raw, bg[a], bg[b])
    return index.ids[a], index.ids[b], scores, bg[rows], dict(result.info), index


def find_duplicates(catalog: Catalog, preset: Preset, *, threshold: float | None = None, score: str | None = None,
                    margin: float | None = None, chunk: int = 2048, approximate: bool = False,
                    engine=None, search: str | None = None, device: str = "auto", verify: bool | None = None,
                    verifier=None) -> DuplicateReport:
    """Every pair at or above ``threshold`` among the catalog's ``ok`` files, and their groups.

    Files with identical bytes are one node (one vector): matching, scoring and grouping run on distinct
    contents, and the file pairs are expanded only when they are read (:class:`PairList`), so 2,000 identical files cost what one costs.

    ``search``: ``auto`` (default: exact below :data:`embeddr.search.EXACT_BELOW` distinct contents, the
    approximate k-means self-join with a sampled recall estimate above; :func:`content_pairs`), ``exact`` or
    ``approximate`` (``approximate=True`` is the same). ``engine``: another exact search with the
    results of :func:`embeddr.normalize.decide`, called as ``engine(stored_ids, stored_vecs, ids, vecs,
    threshold, scorer, live) -> (a, b, score, bg)`` (:func:`embeddr.ray_dupes.ray_search`: Ray tasks).

    ``verify``: give pairs scored near the threshold a second, geometric look (:mod:`embeddr.verify`;
    default: the preset's ``[verify]`` table, and only with the preset's own score); ``verifier``: a
    :class:`embeddr.verify.Verifier` to reuse (its key points and looks are kept between calls).
    """
    from .normalize import Scorer

    threshold = preset.threshold.value if threshold is None else float(threshold)
    scorer = Scorer.for_preset(preset, score)
    score = scorer.name
    margin = preset.threshold.group_margin if margin is None else margin
    # No Python object per file or per vector of the collection: the live vector ids are one array, and the
    # files (rows) are read only for the contents that end up in a pair or have exact copies.
    files = catalog.count_ok_files()
    rejected = catalog.not_duplicate_pairs()
    ids = _matched_ids(catalog)

    search = search or ("approximate" if approximate else "auto")
    vcfg = preset.verify
    verifying = (vcfg.enabled if verify is None else bool(verify)) and score == preset.score and not preset.is_hash
    band = vcfg.band(threshold, preset.threshold.value) if verifying else (threshold, threshold)
    low = min(band[0], threshold)  # pairs are searched down to the band's low end
    far_raw = vcfg.far_raw(threshold, preset.threshold.value) if verifying else None
    scorer = scorer.with_far(far_raw)  # ... and those below it whose raw cosine reaches far_raw (the far look)
    far_skipped = 0  # far pairs listed but not looked at (past far_max_pairs: _far_budget)
    pages_listed = pages_skipped = 0  # page-like pairs at or above the threshold; not page-looked at (page_max_pairs)
    scene_listed = scene_skipped = 0  # picture pairs above the band; not given the scene check (scene_max_pairs)
    scene_checked = False  # grouping gives pairs above the band the scene check too
    references: dict = {}  # the reference part of the background, where the search computed it
    if engine is not None and search != "approximate":
        from .index import load_index, stored

        # Query vectors are read straight from the index's storage (no second copy of every vector);
        # vectors that no current file uses are left out of the queries and of the matches.
        index = load_index(catalog)
        stored_ids, stored_vecs = stored(index)
        live: np.ndarray | None = None  # None: every stored vector is live
        if len(ids) == len(stored_ids):
            vecs = stored_vecs
        else:
            live = ids
            vecs = stored_vecs[np.flatnonzero(np.isin(stored_ids, live))]
        a, b, s, bg = engine(stored_ids, stored_vecs, ids, vecs, low, scorer, live)
        search_info = {"search": "exact", "engine": getattr(engine, "name", "custom")}
    else:
        a, b, s, bg, search_info, sindex = content_pairs(catalog, scorer, low, search=search, live_ids=ids,
                                                         device=device, references=references)
        from .search import RowReader

        stored_ids, stored_vecs = sindex.ids, RowReader(sindex.vecs)  # single rows read, not mapped

    # From here on the pairs stay arrays of vector ids (int64) and scores (float32) up to the groups, and the
    # files are read only for what is written out (the groups' members now, the pairs a chunk at a time as
    # they are read: PairStream).
    a, b, s = np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(s, np.float32)
    bg = np.asarray(bg)

    def read(rows: np.ndarray) -> np.ndarray:
        return stored_vecs(rows) if callable(stored_vecs) else np.asarray(stored_vecs[rows], np.float32)

    # reviewer verdicts are on paths; a content pair is rejected when any of its file pairs is
    rejected_ids = _rejected_id_pairs(catalog, rejected)
    confirmed = np.zeros(len(a), bool)
    if verifying:
        from .verify import CONFIRMED, PAGE_MAYBE, PAGE_NO, REFUTED, Verifier, decide_band, page_kinds

        if verifier is None:
            verifier = Verifier(vcfg, _path_of(catalog))
        ref_bg = _reference_of(scorer, stored_ids, read, references)
        rescuable = _rescuable(scorer, vcfg, ref_bg)
        paging = page_kinds(vcfg, scorer, [], []) is not None
        # pairs of pages get the page look at any score at or above the threshold (embeddr.verify.page_kinds)
        pages = page_kinds(vcfg, scorer, ref_bg(a), ref_bg(b)) if paging and len(a) else None
        if pages is not None:
            pages_listed = int(((pages > PAGE_NO) & (s >= threshold - 1e-6)).sum())
            if pages_listed > vcfg.page_max_pairs:  # a crowd of pages at scale: a page look each would take days
                pages_skipped, pages, paging = pages_listed, None, False  # grouping asks for none either
        in_band = (s >= band[0] - 1e-6) & (s < band[1] - 1e-6)
        also = None if pages is None else pages > PAGE_NO
        scene = None
        if vcfg.scene_cells > 0:  # pairs of pictures above the band get the scene check (Verifier.scene_refutes)
            scene = (s >= band[1] - 1e-6) & (True if pages is None else pages == PAGE_NO)
            scene_listed = int(scene.sum())
            if scene_listed > vcfg.scene_max_pairs:  # at scale: a look each would take days; say so
                scene_skipped = scene_listed
            else:
                also = scene if also is None else also | scene
                scene_checked = True
        far = s < band[0] - 1e-6  # listed below the band only for their raw cosine (scorer.with_far)
        # crowds of look-alikes at scale: a look per pair would take days; the best-scoring far_max_pairs are
        # looked at, and the JSON says how many were not
        far_skipped = _far_budget(far, a, b, s, rescuable, vcfg.far_max_pairs)

        def effect_of(idx: np.ndarray, above: np.ndarray) -> np.ndarray:
            ia, ib = a[idx], b[idx]
            hash_of = catalog.hashes_of_ids(np.concatenate([ia, ib]).tolist())  # the looked-at pairs only
            return verifier.decide([hash_of[x] for x in ia.tolist()], [hash_of[y] for y in ib.tolist()], above,
                                   rescuable(ia, ib), None if pages is None else pages[idx], in_band[idx], far[idx])

        keep, effect = decide_band(s, threshold, band, effect_of, also=also, far=far)
        confirmed = effect == CONFIRMED
        search_info["verify"] = verify_summary(band, effect, far, far_raw, far_skipped)
        if paging or pages_skipped:  # page looks were on (and maybe skipped for page_max_pairs)
            search_info["verify"]["pages"] = {"listed": pages_listed, "skipped": pages_skipped}
        if scene is not None:
            refuted = int(((effect == REFUTED) & scene).sum())
            search_info["verify"]["scene"] = {"listed": scene_listed, "refuted": refuted, "skipped": scene_skipped}
        del pages, in_band, far, also, scene
        a, b, s, confirmed = a[keep], b[keep], s[keep], confirmed[keep]
    if len(rejected_ids) and len(a):
        out = _pair_in(a, b, rejected_ids)
        a, b, s, confirmed = a[~out], b[~out], s[~out], confirmed[~out]

    # the contents of the pairs as nodes 0 .. n-1 (``nodes``: their vector ids, sorted)
    nodes = np.unique(np.concatenate([a, b]))
    n = len(nodes)
    ai, bi = np.searchsorted(nodes, a), np.searchsorted(nodes, b)
    hash_rank = _rank_in(catalog.ids_by_hash(), nodes) if n else np.zeros(0, np.int64)  # ties: content hashes
    pos = np.minimum(np.searchsorted(ids, nodes), max(len(ids) - 1, 0))
    node_bg = np.where((len(ids) > 0) & (ids[pos] == nodes), bg[pos] if len(bg) else -1.0, -1.0).astype(np.float64)
    node_rows = np.searchsorted(stored_ids, nodes)
    rejected_nodes = _node_pairs_of(rejected_ids, nodes)

    def similarity(x: np.ndarray, y: np.ndarray, with_raw: bool = False):
        """The scores of node pairs ``(x[i], y[i])`` under the scorer in use (the listed pairs' score): the raw
        cosine of each pair a ``np.dot`` of the two stored vectors (as one pair at a time gives it), read once
        per batch. ``with_raw``: ``(scores, raw cosines)`` (-1 both for pairs a reviewer rejected)."""
        if len(x) == 0:
            z = np.zeros(0, np.float64)
            return (z, z) if with_raw else z
        u = np.unique(np.concatenate([x, y]))
        vecs = read(node_rows[u])
        px, py = np.searchsorted(u, x).tolist(), np.searchsorted(u, y).tolist()
        raw = np.array([np.dot(vecs[i], vecs[j]) for i, j in zip(px, py)], np.float32)
        v = np.asarray(scorer.score(raw, node_bg[x], node_bg[y]), np.float64)
        if len(rejected_nodes):
            out = _pair_in(x, y, rejected_nodes)
            v[out], raw[out] = -1.0, -1.0
        return (v, raw.astype(np.float64)) if with_raw else v

    band_hashes: dict[int, str] = {}  # the content hashes of the cross pairs looked at (the verifier's keys)

    def hashes_of(vx: int, vy: int) -> tuple[str, str]:
        if vx not in band_hashes or vy not in band_hashes:
            if len(band_hashes) > 100_000:
                band_hashes.clear()
            band_hashes.update(catalog.hashes_of_ids([vx, vy]))
        return band_hashes[vx], band_hashes[vy]

    def may_rescue(vx: int, vy: int) -> bool:
        """Whether a look may keep the pair of vector ids below the threshold: neither image like the reference set."""
        ok = rescuable(np.array([vx]), np.array([vy]))
        return ok is None or bool(ok[0])

    group_looks = {"looked_at": 0, "confirmed": 0, "bridged": 0, "skipped": 0}  # grouping's own looks (group_look)

    def band_decision(x: int, y: int, v: float, kind: int = 0, far: bool = False) -> float:
        """What grouping compares with its floor for a pair in the verification band, a pair of pages
        (``kind``: :func:`embeddr.verify.page_kinds`) at or above the floor, or a pair below the band whose raw
        cosine reaches ``far_raw`` (``far``): what the second look made of it (confirmed below the threshold:
        the threshold; refuted: -1), else its score."""
        vx, vy = int(nodes[x]), int(nodes[y])
        hx, hy = hashes_of(vx, vy)
        may = may_rescue(vx, vy)
        if far:  # as Verifier.decide: not every far pair gets the far look (Verifier.far_looks)
            return threshold if may and verifier.far_looks(hx, hy, kind) and verifier.far_confirms(hx, hy, kind, listed_far=True) else v
        verdict = verifier.page_verdict(hx, hy, kind, v >= threshold - 1e-6, band[0] - 1e-6 <= v < band[1] - 1e-6)
        if verdict is not None:  # pairs of pages: the page look decides (the same verdict dupes' pairs get)
            return -1.0 if verdict == REFUTED else threshold if verdict == CONFIRMED else v
        if not (band[0] - 1e-6 <= v < band[1] - 1e-6):
            if scene_checked and kind == PAGE_NO and v >= band[1] - 1e-6:  # the scene check, as the pairs get it
                return -1.0 if verifier.scene_refutes(verifier.look(hx, hy)) else v
            return v
        may = may or verifier.plain_pages(hx, hy, kind)  # like pages, but too plain for them: a picture
        if v < threshold - 1e-6:
            return threshold if may and verifier.rescues(hx, hy, kind) else v
        return -1.0 if verifier.refutes(verifier.look(hx, hy), hx, hy, may, kind) else v

    def all_at_least(x: np.ndarray, y: np.ndarray) -> bool:
        """Whether every unlisted cross pair of two groups passes the floor on the decision: the score, or for
        a pair in the verification band the second look's verdict (looked at only where the scores pass); up to
        ``group_looks`` pairs short of it (below the floor, or far pairs the far look did not keep) pass when a
        group look keeps each of them (:func:`group_look`)."""
        v, raw = similarity(x, y, with_raw=True)
        looked = (v >= band[0] - 1e-6) & (v < band[1] - 1e-6) if verifying else np.zeros(len(v), bool)
        far = ((v < band[0] - 1e-6) & (raw >= far_raw - 1e-6) if far_raw is not None and not far_skipped
               else np.zeros(len(v), bool))
        looked |= far
        kinds = np.zeros(len(v), np.int8)
        if verifying and paging and len(v):
            kinds = page_kinds(vcfg, scorer, ref_bg(nodes[x]), ref_bg(nodes[y]))
            looked |= (kinds > PAGE_NO) & (v >= floor - 1e-6) & ~far
        if scene_checked:
            looked |= (kinds == PAGE_NO) & (v >= band[1] - 1e-6)
        limit = vcfg.group_looks if verifying else 0
        weak = np.flatnonzero(~looked & (v < floor - 1e-6)).tolist()  # below the floor: a group look may keep them
        if len(weak) > limit:
            return False
        for i in np.flatnonzero(looked).tolist():
            if band_decision(int(x[i]), int(y[i]), float(v[i]), int(kinds[i]), bool(far[i])) >= floor:
                continue
            if kinds[i] >= PAGE_MAYBE or not (far[i] or thinly_refuted(int(x[i]), int(y[i]))):
                return False  # refuted by a look
            weak.append(i)  # a far pair the far look did not keep, or one a thin look refuted: a bridge may keep it
            if len(weak) > limit:
                return False
        return all(group_look(int(x[i]), int(y[i]), int(kinds[i]), float(raw[i])) for i in weak)

    def thinly_refuted(x: int, y: int) -> bool:
        """A picture pair the look refuted on fewer than ``dense_upholds_points`` key points (a smooth picture): too
        thin a look to overrule a bridge (:func:`bridged`), as it does not overrule the dense look."""
        if vcfg.group_bridges <= 0:
            return False
        vx, vy = int(nodes[x]), int(nodes[y])
        look = verifier.look(*hashes_of(vx, vy))
        return look is not None and look.points < vcfg.dense_upholds_points and may_rescue(vx, vy)

    def group_look(x: int, y: int, kind: int, raw: float) -> bool:
        """A cross pair below the floor of two groups a listed pair links (``group_looks``): the same picture when
        the look rescues it (as a pair in the band: pictures neither like the reference set; never pages, never a
        pair a reviewer rejected), or when it is bridged (:func:`bridged`)."""
        if kind >= PAGE_MAYBE or (len(rejected_nodes) and _pair_in(np.array([x]), np.array([y]), rejected_nodes)[0]):
            return False
        vx, vy = int(nodes[x]), int(nodes[y])
        if not may_rescue(vx, vy):
            return False
        if not budget():
            return False
        hx, hy = hashes_of(vx, vy)
        same = verifier.rescues(hx, hy)
        group_looks["confirmed"] += bool(same)
        if not same and vcfg.group_bridges > 0 and raw >= band[0] - 1e-6 and (
                not verifier.refutes(verifier.look(hx, hy), hx, hy, True, PAGE_NO) or thinly_refuted(x, y)):
            same = bridged(x, y)
            group_looks["bridged"] += bool(same)
        return same

    def budget() -> bool:
        """One more of grouping's looks, within ``group_max_looks``."""
        if group_looks["looked_at"] >= vcfg.group_max_looks:
            group_looks["skipped"] += 1
            return False
        group_looks["looked_at"] += 1
        return True

    legs: dict[tuple[int, int], bool] = {}  # listed pairs grouping looked at as a bridge's legs: their verdicts

    def bridged(x: int, y: int) -> bool:
        """A cross pair the look neither keeps nor refutes, or refutes on too few key points (``group_bridges``): the
        same picture when, for one of the ``group_bridges`` best hubs (an image listed with both, best by its weaker
        listed score), both listed pairs are certain (:func:`leg`; pictures neither like the reference set). A
        rescan and a bordered copy of one smooth wallpaper, or two strong crops that overlap, are each certainly a
        copy of the original although neither is found in the other; two halves of one photo that share no pixels
        are refuted by their own look (on many key points) and never bridged; a chain of borderline links (in the
        band, not kept by a look) bridges nothing."""
        hubs = np.intersect1d(neighbours(x), neighbours(y))
        hubs = hubs[(hubs != x) & (hubs != y)]
        if len(hubs) == 0:
            return False
        to_x = edge[listed_index.find(np.full(len(hubs), x), hubs)]  # the listed pairs' decisions
        to_y = edge[listed_index.find(np.full(len(hubs), y), hubs)]
        for i in np.lexsort((hash_rank[hubs], -np.minimum(to_x, to_y)))[: vcfg.group_bridges].tolist():
            h = int(hubs[i])
            if leg(x, h, float(to_x[i])) and leg(h, y, float(to_y[i])):
                return True
        return False

    def leg(p: int, q: int, listed: float) -> bool:
        """A listed pair of pictures (its decision ``listed``) certain enough to bridge: scored at or above the band
        (no look needed to list it, and the scene check, where on, did not refute it) or kept by the look
        (:meth:`Verifier.rescues`)."""
        key = (min(p, q), max(p, q))
        if key not in legs:
            vp, vq = int(nodes[p]), int(nodes[q])
            if not may_rescue(vp, vq):
                return False
            if listed >= band[1] - 1e-6:
                legs[key] = True
            elif not budget():
                return False  # not remembered: the budget may be spent, not the verdict
            else:
                legs[key] = verifier.rescues(*hashes_of(vp, vq))
        return legs[key]

    def neighbours(x: int) -> np.ndarray:
        """The nodes listed with node ``x`` (sorted)."""
        return adjacent[adj_start[x]:adj_start[x + 1]]

    from .group import PairIndex, group_arrays

    # grouping runs on contents; the no-chaining floor is on the same decision as the pairs
    floor = threshold - margin
    edge = np.where(confirmed, np.maximum(s.astype(np.float64), threshold), s.astype(np.float64))
    index = listed_index = PairIndex(ai, bi, n, edge)
    if verifying and vcfg.group_looks > 0 and vcfg.group_bridges > 0:  # who is listed with whom, for bridges
        ends = np.concatenate([ai, bi])
        order = np.lexsort((np.concatenate([bi, ai]), ends))
        adjacent = np.concatenate([bi, ai])[order]
        adj_start = np.searchsorted(ends[order], np.arange(n + 1))
        del ends, order
    content_groups = group_arrays(ai, bi, edge, n=n, floor=floor, all_at_least=all_at_least, rank=hash_rank)
    if verifying and vcfg.group_looks > 0:
        search_info.setdefault("verify", {})["groups"] = dict(group_looks, max_per_merge=vcfg.group_looks)
    copied = catalog.copied_hashes()
    copied_ids = np.sort(np.fromiter(catalog.ids_of_hashes(copied).values(), np.int64))
    grouped = np.concatenate(content_groups) if content_groups else np.zeros(0, np.int64)
    rows_of = catalog.rows_for_ids(nodes[grouped].tolist())  # the files of the groups, and only those
    has_copies = np.isin(nodes, copied_ids)
    # a group of two has one pair: its score, for all such groups at once (most groups at scale)
    two = np.array([g for g in content_groups if len(g) == 2], np.int64).reshape(-1, 2)
    where = index.find(two[:, 0], two[:, 1])
    two_scores = np.where(where >= 0, s[np.maximum(where, 0)].astype(np.float64), np.nan)
    gone = np.flatnonzero(where < 0)  # not listed (cannot happen: two nodes group through their pair)
    two_scores[gone] = similarity(two[gone, 0], two[gone, 1])
    two_scores = iter(two_scores.tolist())
    groups: list[Group] = []
    for g in content_groups:
        if len(g) == 2:
            low_ = high_ = next(two_scores)
        else:
            low_, high_ = _score_range(g, index, s, similarity)
        if has_copies[g].any():
            low_, high_ = min(low_, 1.0), max(high_, 1.0)
        members = sorted((r for x in nodes[g].tolist() for r in rows_of.get(x, ())), key=lambda r: r.path)
        groups.append(Group(0, members, low_, high_))
    del rows_of
    grouped_ids = set(nodes[grouped].tolist())
    id_of_copy = catalog.ids_of_hashes(copied)
    alone = [h for h in copied if id_of_copy.get(h) not in grouped_ids]  # exact copies only
    for i in range(0, len(alone), 500):
        chunk = alone[i : i + 500]
        by_hash = catalog.rows_for_hashes(chunk)
        for h in chunk:
            rows = by_hash.get(h, [])
            if len(rows) > 1:
                groups.append(Group(0, list(rows), 1.0, 1.0))
    groups.sort(key=lambda g: (-len(g.members), g.members[0].path))
    for gid, g in enumerate(groups, start=1):
        g.id = gid
    pairs = PairStream(catalog, nodes, ai, bi, s, confirmed, copied, rejected)
    return DuplicateReport(model=preset.name, threshold=threshold, score=score, groups=groups,
                           pairs=pairs, extra=search_info, files=files,
                           threshold_provenance=preset.threshold.provenance)


def _score_range(g: np.ndarray, index, s: np.ndarray, similarity) -> tuple[float, float]:
    """The lowest and highest score between two members of a group (node ids ``g``): listed pairs' scores
    ``s``, the others' from ``similarity``; row blocks of the pairs at a time."""
    low, high = np.inf, -np.inf
    m = len(g)
    step = max(1, (1 << 20) // max(m, 1))
    for i in range(0, m - 1, step):
        rows = np.arange(i, min(i + step, m - 1))
        counts = m - 1 - rows
        x = np.repeat(rows, counts)
        y = np.concatenate([np.arange(r + 1, m) for r in rows.tolist()])
        x, y = g[x], g[y]
        where = index.find(x, y)
        listed = where >= 0
        v = np.empty(len(x), np.float64)
        v[listed] = s[where[listed]]
        v[~listed] = similarity(x[~listed], y[~listed])
        low, high = min(low, float(v.min())), max(high, float(v.max()))
    return low, high


def _pair_in(x: np.ndarray, y: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Which of the pairs ``(x[i], y[i])`` (either orientation) are among ``pairs`` (``(k, 2)``, each row sorted)."""
    lo, hi = np.minimum(x, y), np.maximum(x, y)
    want = np.zeros(len(x), bool)
    for p, q in pairs.tolist():  # a few reviewer verdicts
        want |= (lo == p) & (hi == q)
    return want


def _rank_in(order: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """The rank of each of ``nodes`` (sorted ids) in ``order`` (ids in some order, every node among them)."""
    sel = order[np.isin(order, nodes)]
    rank = np.zeros(len(nodes), np.int64)
    rank[np.searchsorted(nodes, sel)] = np.arange(len(sel))
    return rank


def _node_pairs_of(id_pairs: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Vector id pairs as pairs of node ids (sorted rows), those whose both ids are nodes."""
    if not len(id_pairs) or not len(nodes):
        return np.zeros((0, 2), np.int64)
    pos = np.minimum(np.searchsorted(nodes, id_pairs), len(nodes) - 1)
    both = (nodes[pos] == id_pairs).all(axis=1)
    return np.sort(pos[both], axis=1)


def _rejected_id_pairs(catalog: Catalog, rejected: set[tuple[str, str]]) -> np.ndarray:
    """The reviewer verdicts as pairs of vector ids (``(k, 2)``, each row sorted; a content pair is rejected when
    any of its file pairs is)."""
    pairs = set(_verdict_hashes(rejected, catalog))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    id_of = catalog.ids_of_hashes({h for p in pairs for h in p})
    out = {tuple(sorted((id_of[p], id_of[q]))) for p, q in pairs if p in id_of and q in id_of}
    return np.array(sorted(out), np.int64).reshape(-1, 2)


def verify_summary(band: tuple[float, float], effect: np.ndarray, far: np.ndarray | None = None,
                   far_raw: float | None = None, far_skipped: int = 0) -> dict:
    """What the second look did, for the report's JSON (:mod:`embeddr.verify`); with ``far`` (the pairs below the
    band that got the far look) and ``far_raw``, what the far look did among them; ``far_skipped``: the far pairs
    listed but not looked at (past the preset's ``far_max_pairs``, :func:`_far_budget`)."""
    from .verify import CONFIRMED, REFUTED, UNREADABLE

    out = {"band": [round(band[0], 6), round(band[1], 6)],
           "looked_at": int((effect >= UNREADABLE).sum()),
           "confirmed_below_threshold": int((effect == CONFIRMED).sum()),
           "refuted_above_threshold": int((effect == REFUTED).sum()),
           "unreadable": int((effect == UNREADABLE).sum())}
    if far_raw is not None:
        e = effect[far] if far is not None else effect[:0]
        out["far"] = {"raw_from": round(float(far_raw), 6), "looked_at": int((e >= UNREADABLE).sum()),
                      "confirmed": int((e == CONFIRMED).sum()), "skipped": int(far_skipped)}
    return out


FAR_CHUNK = 1 << 20  # far pairs whose rescue rule is read at a time (bounded memory at a million files)


def _far_budget(far: np.ndarray, a: np.ndarray, b: np.ndarray, s: np.ndarray, rescuable, limit: int) -> int:
    """The far pairs the far look takes, in place in ``far``; returns how many it leaves for the budget. Pairs
    that may not be rescued leave ``far`` and do not count (either image like the reference set: pages, slides,
    whose raw cosines with each other are high, and which no look keeps below the threshold). Of the others, at
    most ``limit`` stay: those scoring highest (ties: the lower vector ids first), the likeliest copies, so a
    crowd of look-alikes at a million files costs at most ``limit`` looks, not days, and not every far look."""
    idx = np.flatnonzero(far)
    for start in range(0, len(idx), FAR_CHUNK):
        rows = idx[start:start + FAR_CHUNK]
        may = rescuable(a[rows], b[rows])
        if may is not None:
            far[rows[~may]] = False
    idx = np.flatnonzero(far)
    if len(idx) <= limit:
        return 0
    order = np.lexsort((b[idx], a[idx], -np.asarray(s)[idx]))  # best score first, then the ids
    far[idx[order[limit:]]] = False
    return len(idx) - limit


def _rescuable(scorer, vcfg, ref_bg):
    """``f(ids_a, ids_b)``: which pairs may be kept below the threshold by the second look: neither image looks
    like the preset's reference set (its reference background, ``ref_bg(ids)`` (:func:`_reference_of`), is
    below ``vcfg.rescue_max_reference``)."""

    def rescuable(ids_a: np.ndarray, ids_b: np.ndarray) -> np.ndarray | None:
        from .verify import may_rescue

        if may_rescue(vcfg, scorer, [], []) is None or len(ids_a) == 0:
            return None
        return may_rescue(vcfg, scorer, ref_bg(ids_a), ref_bg(ids_b))

    return rescuable


def _reference_of(scorer, stored_ids: np.ndarray, read, known: dict | None = None):
    """``ref_bg(ids)``: the reference part of the background of vector ids (the second look's rescue rule and
    page kinds ask). ``read(rows)``: the stored vectors of rows of ``stored_ids``. The reference backgrounds are
    computed once per vector, in blocks, and kept as two sorted arrays; ``known`` (``ids``, ``values``): those
    already computed (by the search: :func:`content_pairs`'s ``references``)."""
    known = known or {}
    known_ids = np.asarray(known.get("ids", np.zeros(0, np.int64)), np.int64)
    known_bg = np.asarray(known.get("values", np.zeros(0, np.float32)), np.float32)
    if len(known_ids) and np.any(np.diff(known_ids) < 0):
        order = np.argsort(known_ids, kind="stable")
        known_ids, known_bg = known_ids[order], known_bg[order]

    def have(ids: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(known_ids, ids), max(len(known_ids) - 1, 0))
        return (known_ids[pos] == ids) if len(known_ids) else np.zeros(len(ids), bool)

    def ref_bg(ids: np.ndarray) -> np.ndarray:
        nonlocal known_ids, known_bg
        ids = np.asarray(ids, np.int64)
        missing = ~have(ids)
        if missing.any():
            todo = np.unique(ids[missing])
            parts = [np.asarray(scorer.reference_background(read(np.searchsorted(stored_ids, todo[i : i + 16384]))),
                                np.float32) for i in range(0, len(todo), 16384)]
            all_ids = np.concatenate([known_ids, todo])
            order = np.argsort(all_ids, kind="stable")
            known_ids, known_bg = all_ids[order], np.concatenate([known_bg, *parts])[order]
        return known_bg[np.searchsorted(known_ids, ids)]

    return ref_bg


def _path_of(catalog: Catalog):
    """The file to read for a content hash: the first of its ``ok`` files that is still there. A content none
    of whose files is there is asked about once (the catalog and the file system), however many pairs it has."""
    import os

    missing: set[str] = set()

    def path_of(h: str) -> str | None:
        if h in missing:
            return None
        for row in catalog.rows_for_hashes({h}).get(h, ()):
            if os.path.isfile(row.path):
                return row.path
        missing.add(h)
        return None

    return path_of


def _matched_ids(catalog: Catalog) -> np.ndarray:
    """Sorted ids of the vectors to match: those ``ok`` files use, less blank pictures (a blank picture, every
    file of it blank, is only ever an exact copy: :func:`embeddr.normalize.is_blank`)."""
    from .normalize import is_blank

    ids = catalog.live_ids()
    blank_rows: dict[str, int] = {}
    for h, w, hh, cw, ch in catalog.bordered_rows():  # only files with a measured border can be blank
        if is_blank(w, hh, cw, ch):
            blank_rows[h] = blank_rows.get(h, 0) + 1
    if not blank_rows:
        return ids
    counts = catalog.count_by_hash(blank_rows)
    blank = [h for h, n in blank_rows.items() if counts.get(h) == n]
    drop = np.fromiter(catalog.ids_of_hashes(blank).values(), np.int64)
    return ids[~np.isin(ids, drop)] if len(drop) else ids


def _verdict_hashes(rejected: set[tuple[str, str]], catalog: Catalog):
    if not rejected:
        return
    hash_of_path = catalog.hashes_of_paths({p for pair in rejected for p in pair})
    for p, q in rejected:
        hp, hq = hash_of_path.get(p), hash_of_path.get(q)
        if hp is not None and hq is not None and hp != hq:
            yield hp, hq
