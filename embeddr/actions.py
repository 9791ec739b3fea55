"""Act on duplicates safely: plan, apply (journaled), undo.

:func:`plan` turns policy decisions into one :class:`Step` per duplicate copy; :func:`apply` runs
the steps (a dry run unless ``yes=True``); :func:`undo` puts every file back from the journal.

Actions
-------
``report``    nothing is touched; the plan lists what the policy decided.
``move``      each duplicate is moved into the quarantine folder, keeping its path relative to
              the common root of the groups' files.
``hardlink``  each duplicate is replaced by a hard link to its canonical (same filesystem only).
``symlink``   each duplicate is replaced by a symbolic link to its canonical (absolute target).
``delete``    each duplicate is moved into the journal's trash folder (``JOURNAL.trash``); the
              space is reclaimed when you delete that folder (after which undo cannot restore).
              Needs ``really_delete=True`` on top of ``yes=True``.

Safety
------
* A canonical or protected (``keep_in``) file is never acted on, and a step is never planned
  for a file that is canonical or protected in any group.
* Right before EACH duplicate is touched, its canonical must still exist as a regular file whose
  content hash matches the catalog: the last copy of a picture is never removed, also when another
  process (or another apply) moved the canonical meanwhile. A file that vanished between plan and
  act is skipped and reported, never a crash.
* One writer at a time: ``apply --yes`` and ``undo`` hold the catalog's writer lock
  (:mod:`embeddr.lock`) from planning to the end, so two applies never plan on the same state.
* Before each duplicate is touched, its content hash must match the catalog; a changed, missing
  or linked file is skipped and reported (an outcome with status ``skipped`` and the reason).
* A duplicate that a catalogued symlink points to is never moved or deleted (that would break the
  link): ``move`` and ``delete`` skip it, in the dry run too, with the links in the reason. The
  policy keeps such files in the first place (:func:`embeddr.policy.links_into`); this is for a
  group where two copies have links, or the linked one is not under ``--keep-in``. ``hardlink`` and
  ``symlink`` replace it with a link to the canonical, so the user's symlink still resolves.
* Every act is journaled (:mod:`embeddr.journal`), fsynced, BEFORE it happens; the original bytes
  of deleted and linked files are kept in the journal's trash folder. Links are made at a
  temporary name in the duplicate's folder and put in place with an atomic ``os.replace``.
* :func:`undo` restores every file to its path, verifying its hash and restoring mode and mtime,
  newest act first, also after a crash mid-apply; running it twice is harmless.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import Catalog
from .decode import content_hash
from .discover import IGNORE_MARKER
from .errors import JournalError, PolicyError
from .fsutil import atomic_write, common_root as _common_root, is_under
from .journal import JOURNAL_VERSION, Journal, read_journal_lines, trash_dir, validate
from .lock import writer
from .policy import Decision

ACTIONS = ("report", "move", "hardlink", "symlink", "delete")
STATUS_AFTER = {"move": "moved", "delete": "deleted", "hardlink": "linked", "symlink": "linked"}
ACTED_STATUSES = frozenset(STATUS_AFTER.values())


@dataclass(frozen=True)
class Step:
    """One planned act on one duplicate copy."""

    action: str
    group_id: int
    path: str
    hash: str | None
    size: int | None
    canonical: str
    canonical_hash: str | None
    rule: str
    reason: str
    dest: str | None = None  # move: where the copy goes in the quarantine
    quarantine: str | None = None  # move: the quarantine folder
    links: tuple[str, ...] = ()  # catalogued symlinks / hard links that lead to this copy (at plan time)

    def as_dict(self) -> dict:
        return {"action": self.action, "group": self.group_id, "path": self.path, "size": self.size,
                "canonical": self.canonical, "rule": self.rule, "reason": self.reason, "dest": self.dest}


@dataclass
class Outcome:
    """What happened to one step: ``planned`` (dry run), ``done``, ``skipped`` or ``failed``."""

    step: Step
    status: str
    detail: str = ""

    def as_dict(self) -> dict:
        return {**self.step.as_dict(), "status": self.status, "detail": self.detail}


@dataclass
class ApplyResult:
    action: str
    dry_run: bool
    outcomes: list[Outcome]
    journal: str | None = None
    trash: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.outcomes:
            out[o.status] = out.get(o.status, 0) + 1
        return out

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, Iterator) else v for k, v in self.as_stream().items()}

    def as_stream(self) -> dict:
        """:meth:`as_dict` with the steps as an iterator (for :func:`embeddr.output.stream_json`)."""
        return {"action": self.action, "dry_run": self.dry_run, "journal": self.journal, "trash": self.trash,
                "counts": self.counts, "steps": (o.as_dict() for o in self.outcomes), **self.extra}


@dataclass
class UndoResult:
    journal: str
    restored: list[dict]  # {"path", "result"} per act, newest first

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.restored:
            key = r["result"].split(":", 1)[0]
            out[key] = out.get(key, 0) + 1
        return out

    @property
    def problems(self) -> list[dict]:
        return [r for r in self.restored if r["result"].split(":", 1)[0] not in ("restored", "in place")]

    def as_dict(self) -> dict:
        return {"journal": self.journal, "counts": self.counts, "files": self.restored}


# -- planning ------------------------------------------------------------------------------------

def common_root(decisions: Sequence[Decision]) -> str:
    """The deepest folder that holds every file of the decisions' groups."""
    return _common_root(r.path for d in decisions for r in (d.canonical, *d.duplicates, *d.protected))


def check_quarantine(quarantine: str | os.PathLike, catalog: Catalog) -> str:
    """The quarantine folder of ``--action move`` as an absolute path, refused (:class:`PolicyError`)
    when the catalog's scans would see it: a folder inside (or equal to) a folder the catalog scans,
    one that holds such a folder, or one that holds catalogued files. Its copies would come back
    on the next scan, or (with the ``.embeddr-ignore`` marker apply leaves in its quarantine) the
    files it already held would be marked gone. Nothing is touched."""
    qdir = os.path.abspath(os.fspath(quarantine))
    forms = dict.fromkeys([qdir, os.path.realpath(qdir)])
    roots = [os.path.abspath(r) for r in catalog.scan_roots() if "://" not in r]
    roots = list(dict.fromkeys([*roots, *(os.path.realpath(r) for r in roots)]))
    hint = "choose a folder outside the folders this catalog scans"
    for q in forms:
        for root in roots:
            if is_under(q, root):
                raise PolicyError(f"--quarantine {qdir} lies inside {root}, which this catalog scans: later "
                                  f"scans would not see its files, or take its copies back in; {hint}")
        held = catalog.first_file_under(q)
        if held is not None:
            raise PolicyError(f"--quarantine {qdir} holds catalogued files (such as {held}): later scans would "
                              f"not see them; {hint}")
        for root in roots:
            if is_under(root, q):
                raise PolicyError(f"--quarantine {qdir} holds {root}, which this catalog scans; {hint}")
    return qdir


def plan(decisions: Sequence[Decision], action: str, *, quarantine: str | os.PathLike | None = None) -> list[Step]:
    """One :class:`Step` per duplicate copy of each decision (never a canonical or protected file).

    ``quarantine`` (``move`` only; see :func:`check_quarantine`): a duplicate that lies inside it is
    refused (:class:`PolicyError`), never skipped in silence."""
    if action not in ACTIONS:
        raise PolicyError(f"unknown action {action!r}; valid actions: {', '.join(ACTIONS)}")
    if action == "move" and quarantine is None:
        raise PolicyError("--action move needs a quarantine folder (--quarantine DIR)")
    keep = {d.canonical.path for d in decisions} | {p.path for d in decisions for p in d.protected}
    root = common_root(decisions)
    qdir = os.path.abspath(os.fspath(quarantine)) if quarantine is not None and action == "move" else None
    steps: list[Step] = []
    seen: set[str] = set()
    for d in decisions:
        for dup in d.duplicates:
            if dup.path in keep or dup.path in seen:
                continue
            seen.add(dup.path)
            if qdir is not None and is_under(dup.path, qdir):
                raise PolicyError(f"--quarantine {qdir} holds catalogued files (such as {dup.path}): choose a "
                                  "folder outside the folders this catalog scans")
            dest = os.path.join(qdir, os.path.relpath(dup.path, root)) if action == "move" else None
            steps.append(Step(action, d.group_id, dup.path, dup.hash, dup.size, d.canonical.path, d.canonical.hash,
                              d.rule, d.reason, dest, qdir if action == "move" else None,
                              tuple(d.links.get(dup.path, ()))))
    return steps


# -- file operations ---------------------------------------------------------------------------

def _move(src: str, dest: str) -> None:
    """Move ``src`` to ``dest`` (atomic rename; copy, fsync, rename and unlink across filesystems)."""
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    atomic_write(dest, lambda tmp: shutil.copy2(src, tmp), tmp=dest + ".embeddr-partial")
    os.unlink(src)


def _keep_original(src: str, dest: str) -> None:
    """Keep ``src``'s bytes at ``dest`` without removing ``src`` (a hard link, else a copy)."""
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
        return
    except OSError:
        pass
    atomic_write(dest, lambda tmp: shutil.copy2(src, tmp), tmp=dest + ".embeddr-partial")


def _hash_or_none(path: str) -> str | None:
    try:
        return content_hash(path)
    except OSError:
        return None


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _check_canonical(step: Step) -> str | None:
    """Why the canonical cannot be relied on, or None when it exists and matches the catalog."""
    if not os.path.lexists(step.canonical):
        return f"canonical {step.canonical} is gone: its duplicates are left alone"
    if not _regular(step.canonical):
        return f"canonical {step.canonical} is not a regular file (a link?): its duplicates are left alone"
    if step.canonical_hash and _hash_or_none(step.canonical) != step.canonical_hash:
        return f"canonical {step.canonical} changed since the scan: its duplicates are left alone (scan again)"
    return None


def _symlinks_to(step: Step) -> list[str]:
    """The step's catalogued links that are, now, symlinks resolving to its file."""
    out = []
    for link in step.links:
        try:
            if os.path.islink(link) and os.path.samefile(link, step.path):
                out.append(link)
        except OSError:
            continue
    return out


def _check_links(step: Step) -> str | None:
    """Why a move or delete would break a user's symlink to the duplicate (None: it would not)."""
    if step.action not in ("move", "delete") or not step.links:
        return None
    broken = _symlinks_to(step)
    if not broken:
        return None
    shown = ", ".join(broken[:3]) + (f" and {len(broken) - 3} more" if len(broken) > 3 else "")
    return (f"left in place: {len(broken)} symlink(s) point to it ({shown}); moving it would break them "
            "(keep it with --keep-in, or use --action symlink/hardlink)")


def _check_duplicate(step: Step) -> str | None:
    if not os.path.lexists(step.path):
        return "file is gone since the scan"
    if not _regular(step.path):
        return "not a regular file any more (a link?)"
    try:
        if os.path.samefile(step.path, step.canonical):
            return "already the same file as the canonical (a hard link)"
    except OSError:
        pass
    if not step.hash or _hash_or_none(step.path) != step.hash:
        return "content changed since the scan (hash differs): not touched; scan again"
    if step.action == "move" and step.dest and os.path.lexists(step.dest):
        return f"quarantine already has {step.dest}"
    if step.action == "hardlink" and os.stat(step.path).st_dev != os.stat(step.canonical).st_dev:
        return "canonical is on another filesystem: cannot hard-link"
    return None


# -- apply ---------------------------------------------------------------------------------------

def _open_catalog(catalog: Catalog | str | os.PathLike | None) -> tuple[Catalog | None, bool]:
    if catalog is None or isinstance(catalog, Catalog):
        return catalog, False
    return Catalog(catalog, create=False), True


def _planned(step: Step) -> Outcome:
    """A dry run's outcome: ``planned``, or ``skipped`` when acting would break a symlink (it would be skipped)."""
    why = _check_links(step)
    return Outcome(step, "skipped", why) if why else Outcome(step, "planned")


def apply(steps: Sequence[Step], catalog: Catalog | str | os.PathLike | None, journal_path: str | os.PathLike | None,
          *, yes: bool = False, really_delete: bool = False, action: str | None = None,
          wait: bool = False) -> ApplyResult:
    """Run ``steps`` (from :func:`plan`). A dry run (every outcome ``planned``) unless ``yes``.

    ``catalog``: acted-on files get status ``moved``/``linked``/``deleted`` there, so later
    ``dupes`` and ``apply`` no longer list them. ``journal_path``: a new file (an existing
    non-empty journal is refused: one apply per journal). ``action``: the plan's action (needed
    to report it when there are no steps). With no steps nothing is written: no journal.
    """
    actions = {s.action for s in steps} | ({action} if action else set())
    if len(actions) > 1:
        raise PolicyError(f"a plan has one action, not {sorted(actions)}")
    action = actions.pop() if actions else "report"
    if not yes or action == "report" or not steps:
        return ApplyResult(action, not yes or action == "report", [_planned(s) for s in steps])
    if action == "delete" and not really_delete:
        raise PolicyError("--action delete also needs --really-delete (originals go to the journal's trash folder, "
                          "and are gone for good once you empty it)")
    if journal_path is None:
        raise JournalError("acting needs a journal path")
    journal_path = Path(os.path.abspath(journal_path))
    lock_on = catalog.path if isinstance(catalog, Catalog) else (catalog if catalog is not None else journal_path)
    with writer(lock_on, wait=wait):
        return _apply(steps, catalog, journal_path, action)


def _apply(steps: Sequence[Step], catalog, journal_path: Path, action: str) -> ApplyResult:
    if journal_path.exists() and journal_path.stat().st_size > 0:
        raise JournalError(f"{journal_path} already exists: each apply writes a new journal (choose another --journal)")
    trash = trash_dir(journal_path)
    cat, opened = _open_catalog(catalog)
    outcomes: list[Outcome] = []
    quarantine = next((s.quarantine for s in steps if s.quarantine), None)
    try:
        if quarantine is not None and cat is not None:
            check_quarantine(quarantine, cat)  # before the journal: a refused quarantine leaves nothing behind
        with Journal(journal_path) as journal:
            marked: list[str] = []
            made: list[str] = []
            for folder, always in ((quarantine, False), (trash if action in ("delete", "hardlink", "symlink") else None, True)):
                if folder is None:
                    continue
                try:
                    created, mark = _mark_ignored(folder, always=always)
                except OSError as exc:
                    raise JournalError(f"{folder}: cannot create it ({exc.strerror or exc}); nothing was done") from None
                made += [str(folder)] if created else []
                marked += [str(folder)] if mark else []
            journal.write({"type": "begin", "version": JOURNAL_VERSION, "action": action,
                           "db": str(cat.path.resolve()) if cat is not None else None, "trash": str(trash),
                           "quarantine": quarantine, "created": time.time(), "steps": len(steps),
                           "roots": sorted({os.path.dirname(os.path.normpath(s.path)) for s in steps}),
                           "marked": marked, "made": made})
            for n, step in enumerate(steps, start=1):
                # checked right before each act (not once per group): the canonical must still be there
                why = _check_canonical(step) or _check_duplicate(step) or _check_links(step)
                if why:
                    journal.write({"type": "skip", "path": step.path, "reason": why})
                    outcomes.append(Outcome(step, "skipped", why))
                    continue
                outcomes.append(_act(n, step, journal, trash, cat))
            journal.write({"type": "end", "counts": ApplyResult(action, False, outcomes).counts})
    finally:
        if opened and cat is not None:
            cat.close()
    return ApplyResult(action, False, outcomes, journal=str(journal_path), trash=str(trash))


def _act(n: int, step: Step, journal: Journal, trash: Path, cat: Catalog | None) -> Outcome:
    try:
        st = os.stat(step.path)
    except OSError as exc:  # vanished between the check and now
        why = f"file is gone since the scan ({exc.strerror or exc})"
        journal.write({"type": "skip", "path": step.path, "reason": why})
        return Outcome(step, "skipped", why)
    if step.action == "move":
        dest = step.dest
    else:
        dest = str(trash / f"{n:06d}" / os.path.basename(step.path))
    tmp = None
    if step.action in ("hardlink", "symlink"):
        tmp = os.path.join(os.path.dirname(step.path), f".embeddr-{n:06d}-{os.path.basename(step.path)}.tmp")
    journal.write({"type": "intent", "id": n, "action": step.action, "path": step.path, "hash": step.hash,
                   "size": st.st_size, "mode": st.st_mode, "mtime_ns": st.st_mtime_ns, "canonical": step.canonical,
                   "canonical_hash": step.canonical_hash, "dest": dest, "tmp": tmp, "group": step.group_id})
    try:
        if step.action in ("move", "delete"):
            _move(step.path, dest)
        else:
            _keep_original(step.path, dest)
            if os.path.lexists(tmp):
                os.unlink(tmp)
            if step.action == "hardlink":
                os.link(step.canonical, tmp)
            else:
                os.symlink(os.path.abspath(step.canonical), tmp)
            os.replace(tmp, step.path)
    except OSError as exc:
        if tmp and os.path.lexists(tmp):
            os.unlink(tmp)
        error = f"{type(exc).__name__}: {exc.strerror or exc}"
        journal.write({"type": "failed", "id": n, "error": error})
        return Outcome(step, "failed", f"{error} (file left as it was; `embeddr undo` cleans up)")
    journal.write({"type": "done", "id": n})
    note = {"move": f"quarantined to {dest}", "delete": f"moved to trash {dest}",
            "hardlink": f"hard link to {step.canonical}; original in {dest}",
            "symlink": f"symlink to {step.canonical}; original in {dest}"}[step.action]
    if cat is not None:
        cat.set_status(step.path, STATUS_AFTER[step.action], note)
    return Outcome(step, "done", note)


# -- undo ----------------------------------------------------------------------------------------

def _is_our_link(rec: dict) -> bool:
    """Whether ``path`` now holds the link the act made (to the canonical)."""
    path, canonical = rec["path"], rec["canonical"]
    if rec["action"] == "symlink":
        return os.path.islink(path) and os.path.abspath(os.readlink(path)) == os.path.abspath(canonical)
    if rec["action"] == "hardlink" and _regular(path):
        try:
            if os.path.samefile(path, canonical):
                return True
        except OSError:
            pass
    return False


def _restore_one(rec: dict) -> str:
    path, want, dest, tmp = rec["path"], rec["hash"], rec["dest"], rec.get("tmp")
    for leftover in (tmp, dest + ".embeddr-partial" if dest else None):
        if leftover and os.path.lexists(leftover):
            os.unlink(leftover)
    linked = rec["action"] in ("hardlink", "symlink") and os.path.lexists(path) and _is_our_link(rec)
    if not linked and _regular(path) and _hash_or_none(path) == want:
        if dest and _regular(dest) and _hash_or_none(dest) == want:
            os.unlink(dest)  # a second copy of bytes already back in place
        return "in place"
    if os.path.lexists(path) and not linked:
        return f"conflict: {path} now holds other content; the original is kept at {dest}"
    if not dest or not _regular(dest):
        return f"lost: the original of {path} is not at {dest}"
    if _hash_or_none(dest) != want:
        return f"conflict: {dest} does not hold the original bytes (hash differs); nothing restored"
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(dest, path)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        partial = os.path.join(os.path.dirname(path), f".embeddr-restore-{os.path.basename(path)}.tmp")
        atomic_write(path, lambda tmp: shutil.copy2(dest, tmp), tmp=partial)
        os.unlink(dest)
    try:
        current = stat.S_IMODE(os.lstat(path).st_mode)
        if isinstance(rec.get("mode"), int):
            # never more than the file has now (its own bytes, moved back) nor than the journal says
            wanted = current & stat.S_IMODE(rec["mode"])
            if wanted != current:
                os.chmod(path, wanted)
        if isinstance(rec.get("mtime_ns"), int):
            os.utime(path, ns=(rec["mtime_ns"], rec["mtime_ns"]))
    except OSError:
        pass
    if _hash_or_none(path) != want:
        return f"conflict: {path} restored but its hash differs"
    return "restored"


def _mark_ignored(folder: str | os.PathLike, *, always: bool = False) -> tuple[bool, bool]:
    """Create ``folder`` with an ``.embeddr-ignore`` marker, so scans never take its copies back in.

    A folder that already holds anything is not marked (the marker would hide its files from every
    scan), unless ``always`` (the journal's own trash folder). Returns (created the folder, wrote the marker).
    """
    path = Path(folder)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    marker = path / IGNORE_MARKER
    if marker.exists() or not (created or always or not any(path.iterdir())):
        return created, False
    marker.touch()
    return created, True


def _unmark(folder: str, begin: dict) -> None:
    """Undo's tidy-up of the quarantine of a journal that says what its apply marked and made: empty
    folders below it go, its marker goes when the apply wrote it and the folder holds nothing else
    (copies undo could not put back stay hidden), and the folder itself when the apply made it."""
    if not os.path.isdir(folder):
        return
    for dirpath, _dirs, _files in os.walk(folder, topdown=False):
        if dirpath != folder:
            try:
                os.rmdir(dirpath)  # only empty ones
            except OSError:
                pass
    marked = [m for m in begin.get("marked") or () if isinstance(m, str)]
    made = [m for m in begin.get("made") or () if isinstance(m, str)]
    marker = os.path.join(folder, IGNORE_MARKER)
    if folder in marked and os.listdir(folder) == [IGNORE_MARKER] and os.path.isfile(marker):
        os.unlink(marker)
    if folder in made:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def _prune_empty(folder: str | None) -> None:
    if not folder or not os.path.isdir(folder):
        return
    for dirpath, _dirs, files in os.walk(folder, topdown=False):
        if files == [IGNORE_MARKER]:
            os.unlink(os.path.join(dirpath, IGNORE_MARKER))
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def undo(journal_path: str | os.PathLike, *, catalog: Catalog | str | os.PathLike | None = None,
         wait: bool = False) -> UndoResult:
    """Put every file the journal's apply touched back at its path (newest act first), content verified.

    Works after a crash mid-apply (an intent without done: the state is read from the filesystem)
    and is idempotent. The undo is journaled in the same file. Files restored get status ``ok``
    again in the catalog (``catalog``, else the journal's ``db`` when it still exists).

    The journal is validated first (:func:`embeddr.journal.validate`): an edited journal that points
    outside the apply's folders, quarantine and trash is refused before anything is touched.
    Holds the writer lock of the journal and of its catalog.
    """
    if journal_path is None:
        raise JournalError("no journal to undo: the apply acted on nothing (ApplyResult.journal is None)")
    journal_path = Path(os.path.abspath(journal_path))
    with writer(journal_path, wait=wait):
        lines = read_journal_lines(journal_path)
        if not lines:
            raise JournalError(f"{journal_path}: empty journal, nothing to undo")
        validate(journal_path, lines)
        begin = lines[0][1]
        if catalog is None and isinstance(begin.get("db"), str) and os.path.isfile(begin["db"]):
            catalog = begin["db"]
        if catalog is None:
            return _undo(journal_path, lines, None)
        with writer(catalog.path if isinstance(catalog, Catalog) else catalog, wait=wait):
            return _undo(journal_path, lines, catalog)


def _undo(journal_path: Path, lines: list[tuple[int, dict]], catalog) -> UndoResult:
    records = [r for _, r in lines]
    begin = records[0]
    intents = sorted((r for r in records if r["type"] == "intent"), key=lambda r: r["id"], reverse=True)
    cat, opened = _open_catalog(catalog)
    results: list[dict] = []
    try:
        if begin.get("roots") is None and cat is not None:  # older journals: the catalog vouches for the paths
            for line, rec in lines:
                if rec.get("type") == "intent" and cat.get_file(rec["path"]) is None:
                    raise JournalError(f"{journal_path}:{line}: {rec['path']} is not in the catalog {cat.path}; "
                                       "refusing to undo an edited journal")
        with Journal(journal_path) as journal:
            journal.write({"type": "undo-begin", "intents": len(intents)})
            for rec in intents:
                try:
                    result = _restore_one(rec)
                except OSError as exc:
                    result = f"failed: {type(exc).__name__}: {exc.strerror or exc}"
                journal.write({"type": "undo", "id": rec["id"], "path": rec["path"], "result": result})
                results.append({"path": rec["path"], "result": result})
                if cat is not None and result in ("restored", "in place"):
                    row = cat.get_file(rec["path"])
                    # acted on, or marked missing by a scan that ran meanwhile: the same bytes are back
                    if row is not None and (row.status in ACTED_STATUSES
                                            or (row.status == "missing" and row.hash == rec["hash"])):
                        cat.set_status(rec["path"], "ok", None)
            quarantine = begin.get("quarantine")
            if isinstance(quarantine, str) and "marked" in begin:
                _unmark(quarantine, begin)
            else:  # journals written before apply recorded what it marked
                _prune_empty(quarantine)
            _prune_empty(begin.get("trash"))
            journal.write({"type": "undo-end", "counts": UndoResult(str(journal_path), results).counts})
    finally:
        if opened and cat is not None:
            cat.close()
    return UndoResult(str(journal_path), results)


# -- journals ------------------------------------------------------------------------------------

def default_journal_path(db: str | os.PathLike) -> Path:
    """``embeddr-journal-<UTC time>.jsonl`` beside the catalog (a new name each time)."""
    folder = Path(os.path.abspath(db)).parent
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = folder / f"embeddr-journal-{stamp}.jsonl"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"embeddr-journal-{stamp}-{n}.jsonl"
    return path
