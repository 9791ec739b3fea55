"""Group stage: turn scored pairs into duplicate groups without chaining.

Rule (documented in the README): pairs are taken from the highest score down and two groups
merge only if **every** cross pair of their members scores at least ``floor`` (complete-linkage
veto), where ``floor = threshold - margin`` (the preset's ``group_margin``). So A~B and B~C
put A, B and C in one group only if A and C are also similar (>= floor); otherwise C stays out
of A's group (or starts its own). Every pair inside a group was either found at or above the
threshold or checked to be at or above the floor. Scores of pairs not in the list come from
``similarity(a, b)`` (usually a dot product of the two stored vectors).

Ties are broken by member ids, so the same inputs always give the same groups.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable


def group_pairs(pairs: Iterable[tuple[Hashable, Hashable, float]], *, floor: float,
                similarity: Callable[[Hashable, Hashable], float], max_group: int = 100_000) -> list[list[Hashable]]:
    """Return groups (lists of ≥2 members, each sorted) from ``(a, b, score)`` pairs."""
    edges = sorted(((float(s), a, b) for a, b, s in pairs), key=lambda e: (-e[0], str(e[1]), str(e[2])))
    known: dict[tuple, float] = {}
    for s, a, b in edges:
        known[(a, b)] = known[(b, a)] = s
    group_of: dict[Hashable, int] = {}
    members: dict[int, list[Hashable]] = {}
    next_id = 0

    def score(x, y) -> float:
        value = known.get((x, y))
        if value is None:
            value = known[(x, y)] = known[(y, x)] = float(similarity(x, y))
        return value

    for s, a, b in edges:
        ga, gb = group_of.get(a), group_of.get(b)
        if ga is None:
            ga = next_id = next_id + 1
            group_of[a], members[ga] = ga, [a]
        if gb is None:
            gb = next_id = next_id + 1
            group_of[b], members[gb] = gb, [b]
        if ga == gb:
            continue
        left, right = members[ga], members[gb]
        if len(left) + len(right) > max_group:
            continue
        if all(score(x, y) >= floor for x in left for y in right):
            if len(left) < len(right):
                ga, gb, left, right = gb, ga, right, left
            left.extend(right)
            for m in right:
                group_of[m] = ga
            del members[gb]
    groups = [sorted(m, key=str) for m in members.values() if len(m) > 1]
    groups.sort(key=lambda g: (-len(g), str(g[0])))
    return groups
