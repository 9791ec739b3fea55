"""Chaos check for embeddr (issue 11): concurrent and killed runs must lose nothing and undo must restore all.

Bounded and local: everything happens under a temporary folder, with the CLI run as subprocesses on
real photos (scikit-image's sample images plus resized / re-encoded copies of them). Nothing is
served on a non-loopback address, nothing is fetched. Phases (each repeated ``--rounds`` times):

* concurrent applies: two ``apply --action move --yes`` with opposite ``--prefer`` at once;
* concurrent scans: two ``scan`` of overlapping roots at once (one with ``--wait``);
* kill -9 of ``scan`` at a random moment (then: no decode worker outlives it, ``info`` shows the run
  interrupted, and the next scan completes with every file ``ok``);
* kill -9 of ``apply`` (a random action: move, delete, hardlink, symlink) at a random moment;
* kill -9 of ``undo`` at a random moment (then undo again);
* a torn journal (a fragment of a record at its end, as a power cut leaves it), undone twice;
* a stale index: a catalog deleted and made again under the same name beside its old ``.faiss``.

After each: every duplicate group still has a copy with its original bytes in the tree, and after
``undo`` the tree is exactly as before (paths, bytes, mtimes, modes). Prints a summary and exits 1
on any loss or mismatch.

    python scripts/chaos.py --rounds 3 --seed 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-c", "from embeddr.cli import main; main()"]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "camera",
          "coins", "moon")


def make_library(root: Path) -> None:
    import numpy as np
    import skimage.data as skdata
    from PIL import Image

    for name in PHOTOS:
        arr = getattr(skdata, name)()
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        im = Image.fromarray(arr[..., :3].astype(np.uint8)).convert("RGB")
        im.thumbnail((384, 384))
        (root / "photos").mkdir(parents=True, exist_ok=True)
        (root / "copies" / "png").mkdir(parents=True, exist_ok=True)
        im.save(root / "photos" / f"{name}.jpg", quality=90)
        im.resize((im.width // 2, im.height // 2)).save(root / "copies" / f"{name}_small.jpg", quality=80)
        im.save(root / "copies" / "png" / f"{name}.png")
        os.chmod(root / "copies" / "png" / f"{name}.png", 0o640)  # modes must come back too


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """relpath -> (sha256 of bytes or link target, mtime_ns, mode) of every file and link under root."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        if p.is_symlink():
            data = os.readlink(p).encode()
        elif p.is_file():
            data = p.read_bytes()
        else:
            continue
        out[str(p.relative_to(root))] = (hashlib.sha256(data).hexdigest(), st.st_mtime_ns, st.st_mode)
    return out


def cli(*args, check: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    res = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise SystemExit(f"chaos: {' '.join(map(str, args))} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return res


def groups(db: Path) -> list[list[str]]:
    res = cli("dupes", "--db", db, "--format", "json", check=True)
    return [[m["path"] for m in g["members"]] for g in json.loads(res.stdout)["groups"]]


class Chaos:
    def __init__(self, work: Path, seed: int):
        self.work, self.rng = work, random.Random(seed)
        self.root = work / "lib"
        self.db = work / "cat.db"
        self.stats: dict[str, dict[str, int]] = {}
        self.failures: list[str] = []
        self.n = 0

    def count(self, phase: str, key: str, k: int = 1) -> None:
        self.stats.setdefault(phase, {}).setdefault(key, 0)
        self.stats[phase][key] += k

    def fail(self, phase: str, what: str) -> None:
        self.count(phase, "FAILURES")
        self.failures.append(f"{phase}: {what}")
        print(f"  FAIL {phase}: {what}", flush=True)

    def fresh(self) -> Path:
        self.n += 1
        return self.work / f"run{self.n:03d}"

    # -- checks ------------------------------------------------------------------------------
    def copies_kept(self, phase: str, base: dict, groups_: list[list[str]]) -> None:
        for members in groups_:
            rels = [str(Path(m).relative_to(self.root)) for m in members]
            alive = [r for r in rels if (self.root / r).is_file() and not (self.root / r).is_symlink()
                     and hashlib.sha256((self.root / r).read_bytes()).hexdigest() == base[r][0]]
            if not alive:
                self.fail(phase, f"no copy left of the group {rels}")
        self.count(phase, "groups checked", len(groups_))

    def restored(self, phase: str, base: dict) -> None:
        now = snapshot(self.root)
        if now != base:
            diff = sorted(set(now.items()) ^ set(base.items()))[:4]
            self.fail(phase, f"tree differs after undo: {diff}")
        else:
            self.count(phase, "trees restored exactly")

    def undo_all(self, phase: str, journals: list[Path]) -> None:
        for j in sorted((j for j in journals if j.exists()), key=lambda p: p.stat().st_mtime_ns, reverse=True):
            res = cli("undo", j, "--wait")
            if res.returncode not in (0,):
                self.fail(phase, f"undo {j.name} exit {res.returncode}: {res.stderr.strip()[-300:]}")

    # -- phases ------------------------------------------------------------------------------
    def setup(self) -> None:
        make_library(self.root)
        cli("scan", self.root, "--db", self.db, "--quiet", check=True)
        self.groups = groups(self.db)
        print(f"library: {len(snapshot(self.root))} files, {len(self.groups)} duplicate groups", flush=True)

    def concurrent_applies(self) -> None:
        phase = "concurrent applies"
        base, run = snapshot(self.root), self.fresh()
        procs = [subprocess.Popen([*CLI, "apply", "--db", str(self.db), "--action", "move", "--quarantine", str(run / f"q{i}"),
                                   "--prefer", str(self.root / folder), "--journal", str(run / f"j{i}.jsonl"), "--yes"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i, folder in enumerate(("photos", "copies"))]
        for p in procs:
            _, err = p.communicate(timeout=600)
            self.count(phase, f"exit {p.returncode}")
            if p.returncode not in (0, 2) or (p.returncode == 2 and "another embeddr command is writing" not in err):
                self.fail(phase, f"apply exit {p.returncode}: {err.strip()[-300:]}")
        self.copies_kept(phase, base, self.groups)
        self.undo_all(phase, [run / "j0.jsonl", run / "j1.jsonl"])
        self.restored(phase, base)
        cli("scan", self.root, "--db", self.db, "--quiet", "--wait", check=True)

    def concurrent_scans(self) -> None:
        phase = "concurrent scans"
        procs = [subprocess.Popen([*CLI, "scan", str(r), "--db", str(self.db), "--quiet", *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for r, extra in ((self.root, []), (self.root / "copies", ["--wait"]))]
        for p in procs:
            _, err = p.communicate(timeout=600)
            self.count(phase, f"exit {p.returncode}")
            if p.returncode not in (0, 2) or (p.returncode == 2 and "another embeddr command is writing" not in err):
                self.fail(phase, f"scan exit {p.returncode}: {err.strip()[-300:]}")
        info = json.loads(cli("info", "--db", self.db, "--json", check=True).stdout)
        if info["missing"] or info["ok"] != len(snapshot(self.root)):
            self.fail(phase, f"after two scans: {info['ok']} ok, {info['missing']} gone (want {len(snapshot(self.root))} ok)")
        else:
            self.count(phase, "catalogs complete")

    def _children(self, pid: int) -> set[int]:
        kids: set[int] = set()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    kids.update(int(x) for x in fh.read().split())
        except OSError:
            pass
        return kids

    def _workers(self, pid: int) -> set[int]:
        """Children forked from ``pid`` (same command line): its decode workers, not helper programs."""
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                mine = fh.read()
        except OSError:
            return set()
        out = set()
        for kid in self._children(pid):
            try:
                with open(f"/proc/{kid}/cmdline", "rb") as fh:
                    if fh.read() == mine:
                        out.add(kid)
            except OSError:
                pass
        return out

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
        except OSError:
            return False

    def _kill_after(self, args: list, delay: float, watch_children: bool = False,
                    when=None, limit: float = 120.0) -> tuple[int | None, set[int]]:
        """Run ``args``; kill -9 it ``delay`` seconds after start, or (``when`` given) ``delay`` seconds
        after ``when(pid)`` first holds (a moment inside the work: workers up, first act journaled)."""
        proc = subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kids: set[int] = set()
        if when is not None:
            start_by = time.monotonic() + limit
            while proc.poll() is None and time.monotonic() < start_by and not when(proc.pid):
                if watch_children:
                    kids |= self._workers(proc.pid)
                time.sleep(0.005)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            if watch_children:
                kids |= self._workers(proc.pid)
            time.sleep(0.005)
        if watch_children:
            kids |= self._workers(proc.pid)
        if proc.poll() is not None:
            return proc.returncode, kids
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return None, kids

    def killed_scan(self, duration: float, inside: bool) -> None:
        phase = "kill -9 scan"
        db = self.fresh().with_suffix(".db")
        db.parent.mkdir(exist_ok=True)
        args = ["scan", self.root, "--db", db, "--quiet", "--workers", "2"]
        if inside:  # once the decode workers are up
            code, kids = self._kill_after(args, self.rng.uniform(0, 0.3), watch_children=True,
                                          when=lambda pid: bool(self._workers(pid)))
        else:
            code, kids = self._kill_after(args, self.rng.uniform(0.3, duration), watch_children=True)
        self.count(phase, "finished before the kill" if code is not None else "killed mid-run")
        if kids:
            self.count(phase, "killed with decode workers running")
            deadline = time.monotonic() + 10  # bound for the kernel to deliver PDEATHSIG
            while any(self._alive(k) for k in kids) and time.monotonic() < deadline:
                time.sleep(0.05)
            orphans = [k for k in kids if self._alive(k)]
            if orphans:
                self.fail(phase, f"orphaned decode workers {orphans}")
            self.count(phase, "orphaned workers", len(orphans))
        if code is None and db.exists():
            runs = json.loads(cli("info", "--db", db, "--json", check=True).stdout)["runs"]
            if runs and runs[0]["status"] not in ("interrupted", "done"):
                self.fail(phase, f"killed run shows as {runs[0]['status']}")
            elif runs:
                self.count(phase, f"killed runs shown {runs[0]['status']}")
        res = cli("scan", self.root, "--db", db, "--quiet")
        info = json.loads(cli("info", "--db", db, "--json", check=True).stdout)
        if res.returncode != 0 or info["ok"] != len(snapshot(self.root)) or info["errors"]:
            self.fail(phase, f"rescan after the kill: exit {res.returncode}, {info['ok']} ok, {info['errors']} errors")
        else:
            self.count(phase, "rescans complete")

    def killed_apply(self, duration: float, inside: bool) -> None:
        phase = "kill -9 apply"
        base, run = snapshot(self.root), self.fresh()
        action = self.rng.choice(["move", "delete", "hardlink", "symlink"])
        journal = run / "j.jsonl"
        run.mkdir()
        args = ["apply", "--db", self.db, "--action", action, "--journal", journal, "--yes"]
        args += ["--quarantine", run / "q"] if action == "move" else (["--really-delete"] if action == "delete" else [])
        if inside:  # once the first act is journaled
            code, _ = self._kill_after(args, self.rng.uniform(0, 0.05), when=lambda pid: _has(journal, '"intent"'))
        else:
            code, _ = self._kill_after(args, self.rng.uniform(0.2, duration))
        acted = [r for r in (_records(journal) if journal.exists() else []) if r.get("type") == "intent"]
        ended = any(r.get("type") == "end" for r in (_records(journal) if journal.exists() else []))
        self.count(phase, f"{action}: killed mid-apply" if code is None and acted and not ended else f"{action}: killed before/after acting")
        self.copies_kept(phase, base, self.groups)
        self.undo_all(phase, [journal])
        self.restored(phase, base)
        cli("scan", self.root, "--db", self.db, "--quiet", "--wait", check=True)

    def killed_undo(self, duration: float, inside: bool) -> None:
        phase = "kill -9 undo"
        base, run = snapshot(self.root), self.fresh()
        journal = run / "j.jsonl"
        run.mkdir()
        cli("apply", "--db", self.db, "--action", "move", "--quarantine", run / "q", "--journal", journal, "--yes", check=True)
        if inside:  # once the undo has begun
            code, _ = self._kill_after(["undo", journal], self.rng.uniform(0, 0.05), when=lambda pid: _has(journal, "undo-begin"))
        else:
            code, _ = self._kill_after(["undo", journal], self.rng.uniform(0.2, duration))
        undos = [r for r in _records(journal) if r.get("type") == "undo"]
        ended = any(r.get("type") == "undo-end" for r in _records(journal))
        self.count(phase, "killed mid-undo" if code is None and undos and not ended
                   else ("killed before undoing" if code is None else "undo finished before the kill"))
        self.copies_kept(phase, base, self.groups)
        self.undo_all(phase, [journal])
        self.restored(phase, base)
        cli("scan", self.root, "--db", self.db, "--quiet", "--wait", check=True)

    def torn_journal(self) -> None:
        phase = "torn journal"
        base, run = snapshot(self.root), self.fresh()
        journal = run / "j.jsonl"
        run.mkdir()
        cli("apply", "--db", self.db, "--action", "move", "--quarantine", run / "q", "--journal", journal, "--yes", check=True)
        with open(journal, "a") as fh:
            fh.write('{"type": "undo", "id": 2, "path": "/x')  # a record cut by a power loss
        for i in (1, 2):
            res = cli("undo", journal)
            if res.returncode != 0:
                self.fail(phase, f"undo #{i} exit {res.returncode}: {res.stderr.strip()[-300:]}")
        self.restored(phase, base)
        cli("scan", self.root, "--db", self.db, "--quiet", "--wait", check=True)

    def stale_index(self) -> None:
        phase = "stale index"
        run = self.fresh()
        run.mkdir()
        db, fresh = run / "p.db", run / "fresh.db"
        cli("scan", self.root / "photos", "--db", db, "--quiet", check=True)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        cli("scan", self.root / "copies", "--db", db, "--quiet", check=True)  # beside the old p.db.faiss
        cli("scan", self.root / "copies", "--db", fresh, "--quiet", check=True)
        got = sorted(sorted(g) for g in groups(db))
        want = sorted(sorted(g) for g in groups(fresh))
        if got != want:
            self.fail(phase, f"dupes on a remade catalog: {len(got)} groups, a fresh one: {len(want)}")
        else:
            self.count(phase, "remade catalogs match a fresh one")

    def timed(self, args: list) -> float:
        t = time.perf_counter()
        cli(*args, check=True)
        return time.perf_counter() - t


def _has(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _records(journal: Path) -> list[dict]:
    out = []
    for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="repetitions of each phase (default 3)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="embeddr-chaos-"))
    t0 = time.perf_counter()
    chaos = Chaos(work, args.seed)
    try:
        chaos.setup()
        # how long each command takes here, so kills land inside it
        scan_t = chaos.timed(["scan", chaos.root, "--db", work / "timing.db", "--quiet", "--workers", "2"])
        run = chaos.fresh()
        run.mkdir()
        apply_t = chaos.timed(["apply", "--db", chaos.db, "--action", "move", "--quarantine", run / "q",
                               "--journal", run / "j.jsonl", "--yes"])
        undo_t = chaos.timed(["undo", run / "j.jsonl"])
        cli("scan", chaos.root, "--db", chaos.db, "--quiet", check=True)
        print(f"timings: scan {scan_t:.1f}s, apply {apply_t:.1f}s, undo {undo_t:.1f}s", flush=True)
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", flush=True)
            chaos.concurrent_applies()
            chaos.concurrent_scans()
            for inside in (False, True):
                chaos.killed_scan(scan_t, inside)
                chaos.killed_apply(apply_t, inside)
                chaos.killed_undo(undo_t, inside)
            chaos.torn_journal()
            if r == 0:
                chaos.stale_index()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nchaos: {time.perf_counter() - t0:.0f}s, seed {args.seed}, {args.rounds} round(s)")
    for phase, counts in chaos.stats.items():
        print(f"  {phase:<20} " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    if chaos.failures:
        print(f"\n{len(chaos.failures)} FAILURE(S):")
        for f in chaos.failures:
            print(f"  {f}")
        return 1
    print("no loss, no mismatch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
