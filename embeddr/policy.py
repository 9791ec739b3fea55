"""Retention policy: which copy of each duplicate group is canonical, and why.

A :class:`Policy` is an ordered list of rules plus two lists of folders. :func:`decide` turns a
:class:`~embeddr.dupes.DuplicateReport` into one :class:`Decision` per group: the canonical copy,
the duplicates an action may touch, the protected copies that are never touched, and the rule
that decided, in words. ``canonical``, ``duplicates`` and ``protected`` partition the group (the
canonical is not repeated in ``protected`` even when it lies under a protected folder).

How a group is decided
----------------------
1. **keep-in** (always first, whether listed or not): members under a ``keep_in`` folder are
   *protected*: they are kept and never touched by any action. If a group has protected members,
   the canonical is chosen among them only (the steps below break ties between them); the other
   members are the duplicates. A group whose members are *all* protected has no duplicates.
2. **linked** (always next, never listed): a copy that other catalogued links lead to (a symlink
   the scan saw pointing to it, or a second hard link of it) is kept in preference to one that no
   link leads to: moving or deleting it would break those symlinks, and while another hard link
   keeps its bytes, removing it frees nothing. The links come from :func:`links_into` (``links``
   of :func:`decide`); without them this step does nothing.
3. The remaining rules run in the order given. Each keeps only the candidates that are best by
   its criterion; a rule that cannot tell the candidates apart passes all of them to the next.
   The rule that narrows the candidates to one is the one that *decided*.
4. If every rule ties, the first path in sorted (code-point) order wins: rule ``"tie: path order"``.

Rules (the names users type, e.g. ``--rule most-pixels --rule oldest`` or in TOML)
----------------------------------------------------------------------------------
``keep-in``       files under a protected reference folder (``--keep-in DIR``) win; see above.
``prefer``        files under a preferred folder (``--prefer DIR``) win; with several preferred
                  folders, one listed earlier beats one listed later.
``most-pixels``   more pixels (width x height) wins; unknown dimensions count as 0. A uniform
                  border or padding (letterbox, white frame) is not counted: the scan records the
                  size of the picture inside it, so a padded copy does not beat its original.
                  That size is measured (against the corners' colour, on a reduced decode), so it
                  is approximate: a dark photo's background or JPEG noise moves it by a few
                  percent. Pictures within ``PICTURE_TOLERANCE`` (5 %) of the largest are the same
                  size; among them the larger frame (the whole decoded image) wins, so a crop of
                  the margin loses to the uncropped copy, except that a border never outweighs a
                  copy without one (padding does not beat the original). Still tied: next rule.
``largest-file``  more bytes wins.
``lossless``      a lossless format wins over a lossy one: PNG, TIFF, BMP, lossless WebP (VP8L),
                  PPM/PGM/PBM, TGA, QOI, ICO are lossless; JPEG, lossy WebP, HEIF/AVIF, JPEG 2000,
                  GIF (palette-reduced) and unknown formats count as lossy.
``oldest``        the earliest modification time wins.
``newest``        the latest modification time wins.
``shortest-path`` the shortest absolute path (in characters) wins.

The default order is ``most-pixels, lossless, largest-file, oldest, shortest-path``: for the
same picture as PNG 2000 px, JPEG 2000 px and JPEG 500 px the PNG 2000 px is canonical
(``most-pixels`` drops the 500 px copy, ``lossless`` then prefers the PNG).

A policy file (TOML)::

    [policy]
    rules = ["prefer", "most-pixels", "lossless", "oldest"]
    keep_in = ["/archive/masters"]
    prefer = ["/photos/best"]

Decisions are deterministic: the same report and policy give the same canonicals and reasons.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from .catalog import FileRow
from .dupes import DuplicateReport
from .errors import PolicyError
from .fsutil import is_under as _under

RULES = ("keep-in", "prefer", "most-pixels", "largest-file", "lossless", "oldest", "newest", "shortest-path")
DEFAULT_RULES = ("most-pixels", "lossless", "largest-file", "oldest", "shortest-path")
TIE_RULE = "tie: path order"
LINKED_RULE = "linked"  # the implicit step before the rules (not a rule users list)
PICTURE_TOLERANCE = 0.05  # most-pixels: pictures (content boxes) within 5 % of the largest are the same size

LOSSLESS_FORMATS = frozenset({"PNG", "TIFF", "BMP", "DIB", "PPM", "PGM", "PBM", "PNM", "TGA", "QOI", "ICO", "SGI", "PCX"})


def _abs(folders: Sequence[str | os.PathLike]) -> tuple[Path, ...]:
    return tuple(Path(os.path.abspath(os.path.expanduser(os.fspath(f)))) for f in folders)


@dataclass(frozen=True)
class Policy:
    """An ordered list of rule names, protected folders and preferred folders."""

    rules: tuple[str, ...] = DEFAULT_RULES
    keep_in: tuple[Path, ...] = ()
    prefer: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        bad = [r for r in rules if r not in RULES]
        if bad:
            raise PolicyError(f"unknown rule(s) {', '.join(map(repr, bad))}; valid rules: {', '.join(RULES)}")
        if len(set(rules)) != len(rules):
            raise PolicyError(f"a rule is listed twice in {list(rules)}")
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "keep_in", _abs(self.keep_in))
        object.__setattr__(self, "prefer", _abs(self.prefer))

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> "Policy":
        """Read ``[policy]`` (``rules``, ``keep_in``, ``prefer``) from a TOML file.

        Relative folders are taken relative to the TOML file's folder. Unknown keys are refused.
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PolicyError(f"{path}: no such policy file") from None
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(f"{path}: not a valid TOML policy file ({exc})") from None
        extra = sorted(set(data) - {"policy"})
        if extra:
            raise PolicyError(f"{path}: unknown table(s) {', '.join(extra)}; valid: [policy]")
        section = data.get("policy", {})
        if not isinstance(section, dict):
            raise PolicyError(f"{path}: [policy] must be a table")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(section) - set(valid))
        if unknown:
            raise PolicyError(f"{path}: unknown key(s) {', '.join(unknown)} in [policy]; valid keys: {', '.join(valid)}")
        kwargs: dict = {}
        for key in valid:
            if key not in section:
                continue
            value = section[key]
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise PolicyError(f"{path}: [policy] {key} must be a list of strings")
            if key == "rules":
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = tuple(Path(v).expanduser() if Path(v).expanduser().is_absolute() else path.parent / v for v in value)
        return cls(**kwargs)

    def with_overrides(self, *, rules: Sequence[str] | None = None, keep_in: Sequence[str | os.PathLike] = (),
                       prefer: Sequence[str | os.PathLike] = ()) -> "Policy":
        """This policy with command-line rules (replacing) and folders (added).

        Preferred folders without a ``prefer`` rule put ``prefer`` first: asking for them means it.
        """
        new_rules = tuple(rules) if rules else self.rules
        if prefer and "prefer" not in new_rules:
            new_rules = ("prefer", *new_rules)
        return Policy(rules=new_rules, keep_in=self.keep_in + _abs(keep_in), prefer=self.prefer + _abs(prefer))

    def as_dict(self) -> dict:
        return {"rules": list(self.rules), "keep_in": [str(p) for p in self.keep_in], "prefer": [str(p) for p in self.prefer]}


@dataclass(frozen=True)
class Decision:
    """What the policy decided for one group."""

    group_id: int
    canonical: FileRow
    duplicates: tuple[FileRow, ...]  # the copies an action may touch (never canonical, never protected)
    protected: tuple[FileRow, ...]  # the other members under keep_in (kept, never touched); canonical excluded
    reason: str  # which rule decided, in words
    rule: str  # the rule name that decided, LINKED_RULE or TIE_RULE
    links: dict[str, tuple[str, ...]] = field(default_factory=dict)  # member path -> catalogued links to it

    def as_dict(self) -> dict:
        out = {"group": self.group_id, "canonical": self.canonical.path, "rule": self.rule, "reason": self.reason,
               "duplicates": [d.path for d in self.duplicates], "protected": [p.path for p in self.protected]}
        if self.links:
            out["links"] = {k: list(v) for k, v in sorted(self.links.items())}
        return out


# -- rule criteria: a key (larger is better) and how to show the value --------------------------

def is_lossless(row: FileRow) -> bool:
    """Whether the file's format keeps every pixel (WebP is sniffed for its VP8L lossless chunk)."""
    fmt = (row.format or "").upper()
    if fmt in LOSSLESS_FORMATS:
        return True
    if fmt == "WEBP":
        try:
            with open(row.path, "rb") as fh:
                head = fh.read(16)
            return head[12:16] == b"VP8L"
        except OSError:
            return False
    return False


def _pixels(r: FileRow) -> int:
    """Pixels of the picture itself: a uniform border or padding adds none (content size from the scan)."""
    if _bordered(r):
        return r.content_width * r.content_height
    return _frame(r)


def _frame(r: FileRow) -> int:
    """Pixels of the whole decoded image, border included."""
    return (r.width or 0) * (r.height or 0)


def _bordered(r: FileRow) -> bool:
    return bool(r.content_width and r.content_height)


def _most_pixels(candidates: list[FileRow]) -> tuple[list[FileRow], str | None]:
    """The ``most-pixels`` rule: (the candidates it keeps, how it narrowed them, or None when all tie).

    1. The picture: candidates whose picture (:func:`_pixels`) is within :data:`PICTURE_TOLERANCE` of the
       largest stay. A measured content box is approximate (a dark or plain background, JPEG noise), so a
       re-encode whose box came out a few percent larger has no more picture than its original.
    2. The frame, among those: the larger whole image wins (a crop of the margin of a photo on white loses to
       the photo), but a bordered copy's frame counts for no more than the largest frame of a candidate
       without a border, so padding or a letterbox never beats the copy without it. Copies without a border
       have frame == picture, so between them this is the exact pixel count.
    """
    best = max(_pixels(r) for r in candidates)
    same = [r for r in candidates if _pixels(r) >= (1 - PICTURE_TOLERANCE) * best]
    steps = []
    if len(same) < len(candidates):
        kept = {r.path for r in same}
        winner = max(same, key=lambda r: (_pixels(r), _frame(r)))
        runner_up = max((r for r in candidates if r.path not in kept), key=lambda r: (_pixels(r), _frame(r)))
        steps.append(f"most-pixels: {_dims(winner)} beats {_dims(runner_up)}")
    unbordered = [_frame(r) for r in same if not _bordered(r)]
    cap = max(unbordered) if unbordered else None

    def frame(r: FileRow) -> int:
        return min(_frame(r), cap) if cap is not None and _bordered(r) else _frame(r)

    top = max(frame(r) for r in same)
    winners = [r for r in same if frame(r) == top]
    if len(winners) < len(same):
        runner_up = max((r for r in same if frame(r) != top), key=frame)
        step = f"{_dims(winners[0])} beats {_dims(runner_up)}"
        if _bordered(winners[0]) or _bordered(runner_up):
            step += f" (the same picture within {PICTURE_TOLERANCE:.0%}: the larger frame wins)"
        steps.append(f"most-pixels: {step}" if not steps else f"then {step}")
    return winners, "; ".join(steps) or None


def _dims(r: FileRow) -> str:
    if not (r.width and r.height):
        return "unknown size"
    if r.content_width and r.content_height:
        return f"{r.content_width}x{r.content_height} (in {r.width}x{r.height} with a border)"
    return f"{r.width}x{r.height}"


def _prefer_rank(policy: Policy) -> Callable[[FileRow], int]:
    def rank(r: FileRow) -> int:
        for i, folder in enumerate(policy.prefer):
            if _under(r.path, str(folder)):
                return len(policy.prefer) - i
        return 0
    return rank


def _criteria(policy: Policy) -> dict[str, tuple[Callable[[FileRow], object], Callable[[FileRow], str]]]:
    def mtime(r: FileRow) -> int:
        return r.mtime_ns if r.mtime_ns is not None else 0

    prefer = _prefer_rank(policy)
    return {
        "prefer": (prefer, lambda r: f"in preferred folder {policy.prefer[len(policy.prefer) - prefer(r)]}" if prefer(r) else "not in a preferred folder"),
        "most-pixels": (_pixels, _dims),
        "largest-file": (lambda r: r.size or 0, lambda r: f"{r.size} bytes"),
        "lossless": (lambda r: int(is_lossless(r)), lambda r: f"{r.format or 'unknown'} ({'lossless' if is_lossless(r) else 'lossy'})"),
        "oldest": (lambda r: -mtime(r), lambda r: f"modified {_when(r)}"),
        "newest": (mtime, lambda r: f"modified {_when(r)}"),
        "shortest-path": (lambda r: -len(r.path), lambda r: f"path of {len(r.path)} characters"),
    }


def _when(r: FileRow) -> str:
    if r.mtime_ns is None:
        return "at an unknown time"
    import datetime as _dt

    return _dt.datetime.fromtimestamp(r.mtime_ns / 1e9, tz=_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _choose(candidates: list[FileRow], policy: Policy,
            links: Mapping[str, Sequence[str]] | None = None) -> tuple[FileRow, str, str]:
    """(canonical, rule, reason) among ``candidates`` by the policy's rules (keep-in excluded)."""
    candidates = sorted(candidates, key=lambda r: r.path)
    if len(candidates) == 1:
        return candidates[0], TIE_RULE, "only candidate"
    criteria = _criteria(policy)
    steps: list[str] = []  # earlier rules that narrowed the candidates without deciding
    tied: list[str] = []
    linked = [r for r in candidates if links and links.get(r.path)]
    if linked and len(linked) < len(candidates):
        unlinked = next(r for r in candidates if not links.get(r.path))
        step = f"{LINKED_RULE}: {_links_text(links[linked[0].path])} to it, none to {unlinked.path}"
        if len(linked) == 1:
            return linked[0], LINKED_RULE, step
        steps.append(step)
        candidates = linked
    for name in policy.rules:
        if name == "keep-in":
            continue
        if name == "most-pixels":
            winners, step = _most_pixels(candidates)
            if step is None:
                tied.append(name)
                continue
            if len(winners) == 1:
                return winners[0], name, step + (f" (after {'; '.join(steps)})" if steps else "")
            steps.append(step)
            candidates = winners
            continue
        key, show = criteria[name]
        best = max(key(r) for r in candidates)
        winners = [r for r in candidates if key(r) == best]
        if len(winners) == len(candidates):
            tied.append(name)
            continue
        losers = [r for r in candidates if key(r) != best]
        runner_up = min(losers, key=lambda r: (-_sortable(key(r)), r.path))
        a, b = show(winners[0]), show(runner_up)
        if a == b:  # same display (e.g. mtimes within a second): show the raw values
            a, b = f"{a} [{abs(key(winners[0]))}]", f"{b} [{abs(key(runner_up))}]"
        step = f"{name}: {a} beats {b}"
        if len(winners) == 1:
            return winners[0], name, step + (f" (after {'; '.join(steps)})" if steps else "")
        steps.append(step)
        candidates = winners
    narrowed = f" (after {'; '.join(steps)})" if steps else ""
    return candidates[0], TIE_RULE, f"tie on {', '.join(tied) or 'every rule'}: first path in sorted order{narrowed}"


def _sortable(value) -> float:
    return float(value)


def _links_text(links: Sequence[str]) -> str:
    shown = ", ".join(links[:3]) + (f" and {len(links) - 3} more" if len(links) > 3 else "")
    return f"{len(links)} link{'s' if len(links) > 1 else ''} ({shown}) lead{'' if len(links) > 1 else 's'}"


def decide_group(group_id: int, members: Sequence[FileRow], policy: Policy,
                 links: Mapping[str, Sequence[str]] | None = None) -> Decision:
    """The :class:`Decision` for one group of duplicate files.

    ``links``: path -> the catalogued links (symlinks, other hard links) that lead to that file
    (:func:`links_into`); members with links are kept in preference to members without.
    """
    members = sorted(members, key=lambda r: r.path)
    links = links or {}
    protected = [m for m in members if any(_under(m.path, str(k)) for k in policy.keep_in)]
    if protected:
        canonical, rule, reason = _choose(protected, policy, links)
        if len(protected) == 1:
            rule, reason = "keep-in", f"keep-in: the only copy under a protected folder ({_protecting(canonical, policy)})"
        else:
            reason = f"keep-in: {len(protected)} protected copies; among them {reason}"
    else:
        canonical, rule, reason = _choose(list(members), policy, links)
    protected_paths = {p.path for p in protected}
    duplicates = tuple(m for m in members if m.path != canonical.path and m.path not in protected_paths)
    return Decision(group_id=group_id, canonical=canonical, duplicates=duplicates,
                    protected=tuple(p for p in protected if p.path != canonical.path), reason=reason, rule=rule,
                    links={m.path: tuple(links[m.path]) for m in members if links.get(m.path)})


def _protecting(row: FileRow, policy: Policy) -> str:
    return next(str(k) for k in policy.keep_in if _under(row.path, str(k)))


def decide(report: DuplicateReport, policy: Policy | None = None,
           links: Mapping[str, Sequence[str]] | None = None) -> list[Decision]:
    """One :class:`Decision` per group of ``report``, in group order. Deterministic.

    ``links``: see :func:`decide_group` (from :func:`links_into`)."""
    policy = policy or Policy()
    return [decide_group(g.id, g.members, policy, links) for g in report.groups]


def links_into(link_paths: Iterable[str], members: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """member path -> the paths among ``link_paths`` that lead to the same file (sorted), for members with any.

    ``link_paths``: the catalog's ``link`` rows (symlinks to a scanned file, second hard links), see
    :meth:`embeddr.catalog.Catalog.link_paths`. A link leads to a member when it resolves, now, to the same
    file (device and inode): a symlink whose target is the member, or another hard link of it. Paths that no
    longer exist are left out.
    """
    link_paths = list(link_paths)
    if not link_paths:
        return {}
    by_inode: dict[tuple[int, int], str] = {}
    for m in members:
        if "://" in m:
            continue
        try:
            st = os.stat(m)
        except OSError:
            continue
        by_inode.setdefault((st.st_dev, st.st_ino), m)
    out: dict[str, list[str]] = {}
    if not by_inode:
        return {}
    for link in link_paths:
        try:
            st = os.stat(link)
        except OSError:
            continue
        m = by_inode.get((st.st_dev, st.st_ino))
        if m is not None and link != m:
            out.setdefault(m, []).append(link)
    return {m: tuple(sorted(v)) for m, v in out.items()}
