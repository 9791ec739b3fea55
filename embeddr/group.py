"""Group stage: turn scored pairs into duplicate groups without chaining.

Rule (documented in the README): pairs are taken from the highest score down and two groups
merge only if **every** cross pair of their members scores at least ``floor`` (complete-linkage
veto), where ``floor = threshold - margin`` (the preset's ``group_margin``). So A~B and B~C
put A, B and C in one group only if A and C are also similar (>= floor); otherwise C stays out
of A's group (or starts its own). Every pair inside a group was either found at or above the
threshold or checked to be at or above the floor. Scores of pairs not in the list come from
``similarity(a, b)`` (usually a dot product of the two stored vectors).

Ties are broken by member ids, so the same inputs always give the same groups.

:func:`group_arrays` runs the rule on integer node ids held in NumPy arrays (no Python object per pair:
``dupes`` at a million images groups millions of pairs); :func:`group_pairs` is the same rule on any
hashable members, through it.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Hashable, Iterable

import numpy as np

# the cross pairs of two groups are checked this many at a time (bounded memory for large groups)
_BLOCK = 1 << 20


class PairIndex:
    """Where each listed pair ``(a[i], b[i])`` of node ids in ``[0, n)`` is, in either orientation, without a
    dictionary: the pairs' keys ``min * n + max`` sorted once (int64), found with ``np.searchsorted``. A pair
    listed more than once is found at its lowest ``order_by`` value (the last one a dictionary filled from the
    highest score down would hold)."""

    def __init__(self, a: np.ndarray, b: np.ndarray, n: int, order_by: np.ndarray | None = None):
        self.n = int(n)
        key = self.key(a, b)
        order = np.argsort(key, kind="stable") if order_by is None else np.lexsort((order_by, key))
        self.keys, self.where = key[order], order

    def key(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = np.asarray(x, np.int64), np.asarray(y, np.int64)
        return np.minimum(x, y) * self.n + np.maximum(x, y)

    def find(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The index in ``a``/``b`` of each pair ``(x[i], y[i])``, -1 where it is not listed."""
        k = self.key(x, y)
        pos = np.searchsorted(self.keys, k)
        pos_c = np.minimum(pos, max(len(self.keys) - 1, 0))
        hit = (pos < len(self.keys)) & (self.keys[pos_c] == k) if len(self.keys) else np.zeros(len(k), bool)
        return np.where(hit, self.where[pos_c] if len(self.keys) else -1, -1)


def group_arrays(a: np.ndarray, b: np.ndarray, s: np.ndarray, *, n: int, floor: float,
                 all_at_least: Callable[[np.ndarray, np.ndarray], bool], rank: np.ndarray | None = None,
                 max_group: int = 100_000) -> list[np.ndarray]:
    """The grouping rule on node ids ``0 .. n-1``: groups (arrays of >= 2 node ids, ordered by ``rank``) from
    the listed pairs ``(a[i], b[i])`` scored ``s[i]``.

    ``all_at_least(x, y)``: whether every one of the pairs ``(x[i], y[i])`` (pairs not listed, of two groups
    about to merge) scores at least ``floor``; it may stop at the first that does not. ``rank``: the order of
    the nodes for ties (default: their ids): pairs of equal score are taken in the order of
    ``(rank[a], rank[b])``, and the groups come back sorted by size (largest first), then by their first
    member's rank.
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    s = np.asarray(s, np.float64)
    rank = np.arange(n, dtype=np.int64) if rank is None else np.asarray(rank, np.int64)
    order = np.lexsort((rank[b], rank[a], -s)) if len(a) else np.zeros(0, np.int64)
    index = PairIndex(a, b, n, s)
    listed_once = len(np.unique(index.keys)) == len(index.keys)
    group_of = array("q", [-1]) * n
    members: dict[int, list[int]] = {}
    failed: dict[int, set[int]] = {}  # groups found not to merge: they never will (their members only grow)
    next_id = 0

    def merge_ok(left: list[int], right: list[int]) -> bool:
        L, R = np.array(left, np.int64), np.array(right, np.int64)
        step = max(1, _BLOCK // len(R))
        for i in range(0, len(L), step):  # x in left, y in right: the order of the rule's "every pair"
            x = np.repeat(L[i : i + step], len(R))
            y = np.tile(R, len(x) // len(R))
            where = index.find(x, y)
            listed = where >= 0
            if (s[where[listed]] < floor).any():
                return False
            if not listed.all() and not all_at_least(x[~listed], y[~listed]):
                return False
        return True

    for start in range(0, len(order), 65536):
        chunk = order[start : start + 65536]
        for e, x, y in zip(s[chunk].tolist(), a[chunk].tolist(), b[chunk].tolist()):
            ga, gb = group_of[x], group_of[y]
            if ga < 0:
                ga = next_id = next_id + 1
                group_of[x], members[ga] = ga, [x]
            if gb < 0:
                gb = next_id = next_id + 1
                group_of[y], members[gb] = gb, [y]
            if ga == gb:
                continue
            left, right = members[ga], members[gb]
            if len(left) + len(right) > max_group or gb in failed.get(ga, ()):
                continue
            if len(left) == 1 and len(right) == 1 and listed_once:
                ok = e >= floor  # the only cross pair is this one
            else:
                ok = merge_ok(left, right)
            if not ok:
                failed.setdefault(ga, set()).add(gb)
                failed.setdefault(gb, set()).add(ga)
                continue
            if len(left) < len(right):
                ga, gb, left, right = gb, ga, right, left
            left.extend(right)
            for m in right:
                group_of[m] = ga
            del members[gb]
            for other in failed.pop(gb, ()):  # what failed with a part fails with the whole
                partners = failed[other]
                partners.discard(gb)
                partners.add(ga)
                failed.setdefault(ga, set()).add(other)
    groups = [np.array(sorted(m, key=lambda i: rank[i]), np.int64) for m in members.values() if len(m) > 1]
    groups.sort(key=lambda g: (-len(g), int(rank[g[0]])))
    return groups


def group_pairs(pairs: Iterable[tuple[Hashable, Hashable, float]], *, floor: float,
                similarity: Callable[[Hashable, Hashable], float], max_group: int = 100_000) -> list[list[Hashable]]:
    """Return groups (lists of ≥2 members, each sorted) from ``(a, b, score)`` pairs (:func:`group_arrays` on
    the members numbered in the order of ``str``)."""
    pairs = [(a, b, float(s)) for a, b, s in pairs]
    names = sorted({m for a, b, _ in pairs for m in (a, b)}, key=str)
    number = {m: i for i, m in enumerate(names)}
    a = np.array([number[p[0]] for p in pairs], np.int64)
    b = np.array([number[p[1]] for p in pairs], np.int64)
    s = np.array([p[2] for p in pairs], np.float64)
    known: dict[tuple[int, int], float] = {}

    def all_at_least(x: np.ndarray, y: np.ndarray) -> bool:
        for i, j in zip(x.tolist(), y.tolist()):
            value = known.get((i, j))
            if value is None:
                value = known[(i, j)] = known[(j, i)] = float(similarity(names[i], names[j]))
            if value < floor:
                return False
        return True

    groups = group_arrays(a, b, s, n=len(names), floor=floor, all_at_least=all_at_least, max_group=max_group)
    return [[names[i] for i in g] for g in groups]
