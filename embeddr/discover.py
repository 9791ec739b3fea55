"""Discover stage: walk folders and yield the files that are images.

Images are recognised by content (magic bytes), not only by extension: a PNG named
``.dat`` is found, and a text file named ``.jpg`` is kept so that the scan reports it as a
per-file error. Symbolic links to folders are followed once (loops are detected by
(device, inode)); a broken link to an image name is reported, never silently dropped.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .gif .webp .bmp .dib .tif .tiff .ico .ppm .pgm .pbm .pnm .tga "
    ".jp2 .j2k .heic .heif .avif .psd .pcx .sgi .dds .icns .qoi .apng".split()
)
_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"\x00\x00\x01\x00",  # ICO
    b"8BPS",  # PSD
    b"qoif",
    b"\x00\x00\x00\x0cjP  ",  # JPEG 2000
)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def not_regular(mode: int) -> str | None:
    """Why a file of this ``st_mode`` is not read as an image (None: a regular file)."""
    return None if stat.S_ISREG(mode) else f"not a regular file: {_kind(mode)}"


IGNORE_MARKER = ".embeddr-ignore"  # a folder holding this file is not scanned (quarantine, trash, ...)


@dataclass(frozen=True)
class Candidate:
    """A file that looks like an image. ``error`` is set when it cannot even be stat'ed."""

    path: str  # absolute, as reached (links are not resolved)
    size: int = 0
    mtime_ns: int = 0
    error: str | None = None
    link_of: str | None = None  # the same file is scanned under this path (symlink or hard link)
    item_id: str | None = None  # the id a manifest row gave it (embeddr.sources)


def sniff(path: str) -> bool:
    """True when the first bytes of ``path`` look like an image format Pillow reads."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return False
    if any(head.startswith(m) for m in _MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif", b"msf1", b"hevc"):
        return True
    return len(head) >= 2 and head[0:1] == b"P" and head[1:2] in b"123456"  # PNM


def _excluded(rel: str, name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def discover(roots: Iterable[str | os.PathLike], *, exclude: Iterable[str] = (), follow_links: bool = True) -> Iterator[Candidate]:
    """Yield image candidates under ``roots`` (files or folders), in a stable sorted order.

    ``exclude``: glob patterns matched against the path relative to its root and the bare name
    (``--exclude '*.tmp' --exclude 'cache/*'``). A folder that matches is not entered, nor is a
    folder that holds a file named ``.embeddr-ignore`` (``apply`` puts one in its quarantine and
    trash folders, so their copies are never scanned back in).
    """
    patterns = tuple(exclude)
    roots = [os.path.abspath(os.fspath(r)) for r in roots]
    # One root (the usual case, a million files under one folder): every folder is walked once, so a path
    # cannot come twice and a file with one link is reached once; only hard links and symlinks are
    # remembered, not every file (memory stays flat). Several roots may overlap: everything is remembered.
    seen = _Seen(tuple(r.rstrip(os.sep) + os.sep for r in roots if os.path.isdir(r)), every=len(roots) > 1)
    for root in roots:
        if not os.path.isdir(root):
            if os.path.lexists(root):  # a file (or FIFO, device, broken link) named on purpose is always checked
                yield from _one(root, seen, named=True)
            else:
                yield Candidate(root, error="no such file or folder")
            continue
        visited: set[tuple[int, int]] = set()
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
            except OSError as exc:
                yield Candidate(folder, error=f"cannot read folder: {exc.strerror or exc}")
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:  # symlink loop or second link to a folder already walked
                continue
            visited.add(key)
            if os.path.exists(os.path.join(folder, IGNORE_MARKER)):  # embeddr's quarantine/trash, or the user's wish
                continue
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as exc:
                yield Candidate(folder, error=f"cannot list folder: {exc.strerror or exc}")
                continue
            subdirs = []
            for entry in entries:
                if patterns and _excluded(os.path.relpath(entry.path, root), entry.name, patterns):
                    continue
                try:
                    is_dir = entry.is_dir(follow_symlinks=follow_links)
                except OSError:
                    is_dir = False
                if is_dir:
                    subdirs.append(entry.path)
                else:
                    yield from _one(entry.path, seen, is_link=entry.is_symlink())
            stack.extend(reversed(subdirs))


class _Seen:
    """Paths and files already yielded, so one file reached twice is scanned once.

    A symbolic link whose target lies under the scanned folders is a link (the target is scanned
    as itself); a second hard link to a file already yielded is a link of the first one. Links
    take no space of their own, so they are never reported or acted on as duplicates.
    """

    def __init__(self, prefixes: tuple[str, ...], every: bool = True):
        self.paths: set[str] = set()
        self.inodes: dict[tuple[int, int], str] = {}
        self.prefixes = prefixes
        self.every = every  # remember every path and file (several roots); else only links (one root)

    def first_time(self, path: str) -> bool:
        if not self.every:
            return True
        if path in self.paths:
            return False
        self.paths.add(path)
        return True

    def link_of(self, path: str, st: os.stat_result, is_link: bool | None = None) -> str | None:
        is_link = os.path.islink(path) if is_link is None else is_link
        if is_link:
            target = os.path.realpath(path)
            if target != path and target.startswith(self.prefixes):
                return target
        if not (self.every or is_link or st.st_nlink > 1):  # one link, one root: reached once only
            return None
        first = self.inodes.setdefault((st.st_dev, st.st_ino), path)
        return None if first == path else first


def _one(path: str, seen: _Seen, named: bool = False, is_link: bool | None = None) -> Iterator[Candidate]:
    """``is_link``: whether ``path`` is a symlink, when the folder listing already said so (None: ask)."""
    if not seen.first_time(path):
        return
    has_ext = named or os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path) and has_ext:
            yield Candidate(path, error="broken symlink")
        return
    except OSError as exc:
        if has_ext:
            yield Candidate(path, error=f"cannot stat: {exc.strerror or exc}")
        return
    if not stat.S_ISREG(st.st_mode):  # FIFO, socket, device (or a link to one): reported, never opened
        if has_ext:
            yield Candidate(path, error=not_regular(st.st_mode))
        return
    if has_ext or sniff(path):
        yield Candidate(path, size=st.st_size, mtime_ns=st.st_mtime_ns, link_of=seen.link_of(path, st, is_link))
