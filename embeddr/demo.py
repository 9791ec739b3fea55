"""The bundled example: a handful of public-domain photos and duplicates derived from them."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps


def _variants(im: Image.Image) -> dict[str, tuple[Image.Image, str]]:
    w, h = im.size
    crop = im.crop((int(w * 0.08), int(h * 0.05), int(w * 0.92), int(h * 0.9)))
    thumb = im.copy()
    thumb.thumbnail((160, 160))
    return {
        "crop": (crop, "jpg"),
        "grey": (ImageOps.grayscale(im).convert("RGB"), "jpg"),
        "warm": (ImageEnhance.Color(ImageEnhance.Brightness(im).enhance(1.15)).enhance(1.5), "jpg"),
        "thumb": (thumb, "png"),
        "border": (ImageOps.expand(im, border=24, fill=(255, 255, 255)), "webp"),
    }


def make_demo(folder: str | Path) -> int:
    """Write originals, derived duplicates and one exact copy into ``folder/images``; returns the count."""
    out = Path(folder) / "images"
    if out.exists():
        shutil.rmtree(out)
    (out / "originals").mkdir(parents=True)
    (out / "derived").mkdir()
    n = 0
    examples = resources.files("embeddr") / "examples"
    for entry in sorted(examples.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".jpg"):
            continue
        stem = entry.name[:-4]
        original = out / "originals" / entry.name
        original.write_bytes(entry.read_bytes())
        n += 1
        with Image.open(original) as im:
            im = im.convert("RGB")
            for kind, (variant, ext) in _variants(im).items():
                variant.save(out / "derived" / f"{stem}_{kind}.{ext}", quality=80)
                n += 1
    first = sorted((out / "originals").iterdir())[0]
    shutil.copyfile(first, out / f"copy_of_{first.name}")
    return n + 1
