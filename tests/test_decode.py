"""Decode stage: broken files become per-file errors (the scan goes on); awkward real formats decode right."""

from __future__ import annotations

import builtins
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddr import Catalog
from embeddr.decode import DEFAULT_MAX_PIXELS, fit, load_image
from embeddr.discover import Candidate, discover
from embeddr.encoders import load_encoder
from embeddr.errors import DecodeError
from embeddr.pipeline import decode_one, scan



# -- broken files ---------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, width: int = 100_000, height: int = 100_000) -> Path:
    """A tiny, well-formed PNG whose header declares ``width x height`` pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


@pytest.fixture
def broken_dir(photo_dir: Path) -> tuple[Path, dict[str, str]]:
    """photo_dir plus broken files; returns (folder, {path: word expected in the error})."""
    good = sorted(photo_dir.glob("*.jpg"))[0].read_bytes()
    bad = photo_dir / "bad"
    bad.mkdir()
    expected = {}
    (bad / "truncated.jpg").write_bytes(good[: len(good) // 2])
    expected[str(bad / "truncated.jpg")] = "truncated"
    (bad / "empty.jpg").write_bytes(b"")
    expected[str(bad / "empty.jpg")] = "empty"
    (bad / "notes.jpg").write_text("this is a text file, not a JPEG\n" * 20)
    expected[str(bad / "notes.jpg")] = "not a recognised image"
    write_png_bomb(bad / "bomb.png")
    expected[str(bad / "bomb.png")] = "decompression bomb"
    os.symlink(bad / "does-not-exist.jpg", bad / "dangling.jpg")
    expected[str(bad / "dangling.jpg")] = "broken symlink"
    return photo_dir, expected


def _scan(folder: Path, db: Path, **kwargs):
    encoder = load_encoder("sscd-distilled", device="cpu")
    with Catalog(db) as catalog:
        report = scan([folder], catalog, encoder, **kwargs)
        rows = {r.path: r for r in catalog.files(None)}
    return report, rows, encoder


def test_broken_files_are_per_file_errors_and_scan_goes_on(broken_dir, tmp_path):
    folder, expected = broken_dir
    report, rows, encoder = _scan(folder, tmp_path / "c.db", workers=1, batch_size=4)
    good = sorted(str(p) for p in folder.glob("*.jpg"))
    assert report.errors == len(expected)
    for path in good:
        assert rows[path].status == "ok" and rows[path].error is None
    for path, word in expected.items():
        assert rows[path].status == "error", path
        assert word in rows[path].error.lower(), (path, rows[path].error)
    assert encoder.images == len(good)  # only the good files were embedded
    with Catalog(tmp_path / "c.db") as catalog:
        assert {r.path for r in catalog.errors()} == set(expected)


def test_low_max_pixels_turns_real_photos_into_bomb_errors(photo_dir, tmp_path):
    report, rows, encoder = _scan(photo_dir, tmp_path / "c.db", workers=0, max_pixels=10_000)
    assert report.errors == len(rows) > 0 and encoder.images == 0
    assert all("decompression bomb" in r.error and "max-pixels" in r.error for r in rows.values())
    # the guard is per call: Pillow's process-wide limit is left as it was
    assert Image.MAX_IMAGE_PIXELS not in (10_000, None)


def test_unreadable_file_permission_error(photo_dir, tmp_path, monkeypatch):
    """Root ignores permission bits, so make open() fail for one path the way EACCES does."""
    victim = str(sorted(photo_dir.glob("*.jpg"))[1])
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if os.fspath(file) == victim:
            raise PermissionError(13, "Permission denied", victim)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    d = decode_one(Candidate(victim, size=1, mtime_ns=1), 224, "squash", DEFAULT_MAX_PIXELS)
    assert d.pixels is None and d.record.status == "error" and "permission denied" in d.record.error.lower()
    report, rows, _ = _scan(photo_dir, tmp_path / "c.db", workers=0)  # in-process, so the patch applies
    assert rows[victim].status == "error" and "permission denied" in rows[victim].error.lower()
    assert report.errors == 1 and sum(r.status == "ok" for r in rows.values()) == len(rows) - 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads chmod 000 files; covered by the monkeypatched test")
def test_chmod_000_file(photo_dir, tmp_path):
    victim = sorted(photo_dir.glob("*.jpg"))[0]
    victim.chmod(0)
    try:
        _, rows, _ = _scan(photo_dir, tmp_path / "c.db", workers=0)
    finally:
        victim.chmod(0o644)
    assert rows[str(victim)].status == "error" and "permission" in rows[str(victim)].error.lower()


def test_fifo_named_jpg_does_not_block(photo_dir, tmp_path):
    fifo = photo_dir / "pipe.jpg"
    os.mkfifo(fifo)
    found = {c.path: c for c in discover([photo_dir])}
    assert "FIFO" in found[str(fifo)].error  # reported with the reason, never opened (issue 11, item 12)
    result = {}
    worker = threading.Thread(target=lambda: result.update(r=_scan(photo_dir, tmp_path / "c.db", workers=0)), daemon=True)
    worker.start()
    worker.join(120)  # a guard against a hang, not a timing assertion
    assert not worker.is_alive(), "scan blocked on a FIFO"
    report, rows, _ = result["r"]
    assert rows[str(fifo)].status == "error" and "not a regular file" in rows[str(fifo)].error
    photos = [p for p in photo_dir.glob("*.jpg") if p.is_file()]
    assert report.errors == 1 and sorted(rows) == sorted([str(fifo), *(str(p) for p in photos)])


def test_load_image_errors_name_the_file(tmp_path):
    with pytest.raises(DecodeError) as exc:
        load_image(str(tmp_path / "missing.jpg"))
    assert exc.value.path.endswith("missing.jpg") and "not found" in exc.value.reason
    with pytest.raises(DecodeError, match="decompression bomb"):
        load_image(str(write_png_bomb(tmp_path / "b.png")))


# -- awkward but valid files ----------------------------------------------------------------------


def test_exif_orientation_swaps_size_and_rotates_pixels(tmp_path):
    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :30] = (255, 0, 0)  # left half red
    arr[:, 30:] = (0, 0, 255)  # right half blue
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    path = tmp_path / "rot.jpg"
    img.save(path, quality=95, exif=exif.tobytes())
    rgb, meta = load_image(str(path))
    assert (meta.width, meta.height) == (40, 60) and rgb.size == (40, 60)
    px = np.asarray(rgb).astype(int)
    assert px[5, 20, 0] > 200 and px[5, 20, 2] < 60  # the left (red) half is now on top
    assert px[55, 20, 2] > 200 and px[55, 20, 0] < 60


def test_alpha_is_flattened_on_white(tmp_path):
    arr = np.zeros((32, 32, 4), np.uint8)
    arr[..., 0] = 255
    arr[:, :16, 3] = 0  # left half transparent
    arr[:, 16:, 3] = 255
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    rgb, meta = load_image(str(tmp_path / "a.png"))
    px = np.asarray(rgb)
    assert rgb.mode == "RGB" and meta.format == "PNG"
    assert tuple(px[10, 5]) == (255, 255, 255) and tuple(px[10, 25]) == (255, 0, 0)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (48, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    rgb, _ = load_image(str(tmp_path / "cmyk.jpg"), min_side=16)
    r, g, b = np.asarray(rgb).reshape(-1, 3).mean(0)
    assert rgb.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_16_bit_png(tmp_path):
    arr = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (8, 1))
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb, meta = load_image(str(tmp_path / "deep.png"))
    px = np.asarray(rgb).astype(int)
    assert (meta.width, meta.height) == (64, 8)
    assert px[0, 0].max() <= 1 and px[0, -1].min() >= 254 and 100 < px[0, 32, 0] < 155
    assert (np.diff(px[0, :, 0]) >= 0).all()  # the gradient survives


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 255, 0] + [255, 0, 0] + [0] * 762)
    img.paste(1, (10, 0, 20, 20))  # right half = index 1 (red)
    img.save(tmp_path / "pal.png", transparency=0)  # index 0 (green) is transparent
    rgb, _ = load_image(str(tmp_path / "pal.png"))
    px = np.asarray(rgb)
    assert tuple(px[5, 5]) == (255, 255, 255) and tuple(px[5, 15]) == (255, 0, 0)


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    rgb, meta = load_image(str(tmp_path / "anim.gif"))
    r, g, b = np.asarray(rgb).reshape(-1, 3).mean(0)
    assert meta.format == "GIF" and r > 200 and g < 50 and b < 50


def test_multipage_tiff_first_page(tmp_path):
    pages = [Image.new("RGB", (30, 20), c) for c in ((0, 0, 255), (255, 0, 0))]
    pages[0].save(tmp_path / "doc.tif", save_all=True, append_images=pages[1:])
    assert Image.open(tmp_path / "doc.tif").n_frames == 2
    rgb, meta = load_image(str(tmp_path / "doc.tif"))
    r, g, b = np.asarray(rgb).reshape(-1, 3).mean(0)
    assert meta.format == "TIFF" and (meta.width, meta.height) == (30, 20) and b > 200 and r < 50


def test_large_jpeg_is_draft_decoded(tmp_path, photo_arrays):
    big = tmp_path / "big.jpg"
    Image.fromarray(photo_arrays["astronaut"]).resize((4000, 3000)).save(big, quality=85)
    rgb, meta = load_image(str(big), min_side=224)
    assert (meta.width, meta.height) == (4000, 3000)  # metadata is the real size
    assert min(rgb.size) >= 224  # never smaller than the model needs
    assert rgb.width * rgb.height <= 4000 * 3000 // 16  # DCT-scaled: far fewer pixels decoded
    assert fit(rgb, 224, "squash").shape == (224, 224, 3)
