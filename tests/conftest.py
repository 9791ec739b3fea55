"""Shared fixtures: real photos from scikit-image's wheel, the shared real-image set, a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# Where the tests that can run on a GPU run their torch code: torch's CPU here and in CI; scripts/gpu_check.sh
# sets EMBEDDR_TEST_DEVICE=cuda so that the same assertions hold for nvJPEG and the GPU pair search.
TEST_DEVICE = os.environ.get("EMBEDDR_TEST_DEVICE", "cpu")
REALIMAGES = Path(os.environ.get("EMBEDDR_REALIMAGES", REPO.parent / "shared" / "data" / "realimages"))

# Distinct real photos that ship inside scikit-image's wheel (public domain / CC0).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "camera", "coins", "moon")


REQUIRE_ALL = os.environ.get("EMBEDDR_REQUIRE_ALL", "") not in ("", "0")


def need(module: str, reason: str = ""):
    """``pytest.importorskip``, except that under EMBEDDR_REQUIRE_ALL=1 (CI) a missing module fails the
    test: CI must run every test, not hide one behind a skip."""
    if REQUIRE_ALL:
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason or None)


def skip_unless(condition: bool, reason: str) -> None:
    """Skip when ``condition`` is false; under EMBEDDR_REQUIRE_ALL=1 (CI) fail instead."""
    if not condition:
        if REQUIRE_ALL:
            pytest.fail(f"required in CI (EMBEDDR_REQUIRE_ALL=1): {reason}")
        pytest.skip(reason)


def _skimage_array(name: str) -> np.ndarray:
    skdata = pytest.importorskip("skimage.data")
    return getattr(skdata, name)()


@pytest.fixture(scope="session")
def encoder():
    """The default model (sscd-distilled, ONNX on the CPU), loaded once for the whole run. Skips when its
    weights package is missing, except under EMBEDDR_REQUIRE_ALL=1 (CI), where that is a failure."""
    from embeddr.encoders import load_encoder

    try:
        return load_encoder("sscd-distilled", device="cpu")
    except Exception as exc:  # pragma: no cover - weights missing on this machine
        if REQUIRE_ALL:
            raise
        pytest.skip(f"sscd-distilled unavailable: {exc}")


@pytest.fixture(scope="session")
def photo_arrays() -> dict[str, np.ndarray]:
    """name -> RGB uint8 array of real photos (scikit-image sample data)."""
    out = {}
    for name in SKIMAGE_PHOTOS:
        arr = _skimage_array(name)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        out[name] = arr[..., :3].astype(np.uint8)
    return out


def save_photo(arr: np.ndarray, path: Path, long_side: int = 384, **save_kwargs) -> Path:
    img = Image.fromarray(arr).convert("RGB")
    img.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **({"quality": 90} if path.suffix.lower() in (".jpg", ".jpeg") else {}), **save_kwargs)
    return path


@pytest.fixture
def photo_dir(tmp_path: Path, photo_arrays) -> Path:
    """A folder of distinct real photos, one JPEG each (long side 384)."""
    folder = tmp_path / "photos"
    for name, arr in photo_arrays.items():
        save_photo(arr, folder / f"{name}.jpg")
    return folder


@pytest.fixture(scope="session")
def realimages() -> Path:
    """../shared/data/realimages, or skip when this clone has none (users' clones do not)."""
    if not (REALIMAGES / "manifest.csv").is_file():
        pytest.skip("shared real-image set not present (../shared/data/realimages)")
    return REALIMAGES


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


def reference_group_pairs(pairs, *, floor, similarity, max_group=100_000):
    """The grouping rule as it was written before issue 9 (dictionaries of pair scores, two entries a pair):
    the oracle that :func:`embeddr.group.group_pairs` and :func:`embeddr.group.group_arrays` must equal."""
    edges = sorted(((float(s), a, b) for a, b, s in pairs), key=lambda e: (-e[0], str(e[1]), str(e[2])))
    known = {}
    for s, a, b in edges:
        known[(a, b)] = known[(b, a)] = s
    group_of, members, next_id = {}, {}, 0

    def score(x, y):
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


DOCS = Path(os.environ.get("EMBEDDR_TEST_DOCS", Path.home() / ".cache" / "embeddr-test" / "texlive-fonts-recommended-doc"))


def real_pdfs() -> list[Path]:
    """Short real PDF manuals (texlive-fonts-recommended-doc, fetched by scripts/test.sh with apt-get)."""
    found = sorted(DOCS.rglob("*.pdf")) if DOCS.is_dir() else []
    skip_unless(bool(found), f"no real PDF documents under {DOCS} (scripts/test.sh fetches them with apt-get)")
    # a manual shipped twice (A4 and letter paper) is a real duplicate, not two documents: keep one of each
    return [p for p in found if not p.stem.endswith("A4")]


def render_pdf(pdf: Path, out: Path, max_pages: int = 16) -> list[Path]:
    pdfium = pytest.importorskip("pypdfium2") if not REQUIRE_ALL else __import__("pypdfium2")
    doc = pdfium.PdfDocument(str(pdf))
    pages = []
    try:
        if len(doc) > max_pages:
            return []
        for i in range(len(doc)):
            page = doc[i]
            img = page.render(scale=1100 / max(page.get_size())).to_pil().convert("RGB")
            path = out / pdf.stem / f"page_{i + 1:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            img.save(path, quality=90)
            pages.append(path)
    finally:
        doc.close()
    return pages
