"""Deterministic image transforms, grouped by *family*, for building near-duplicate benchmarks.

Every family is a function ``(img, rng) -> Variant`` where ``img`` is an RGB :class:`PIL.Image.Image`
and ``rng`` a :class:`random.Random`; all randomness comes from ``rng`` (numpy noise is seeded from it),
so the same input and the same rng state give the same pixels.  A :class:`Variant` carries the new
image, the :class:`SaveSpec` to write it with (only ``reencode``, and ``combo`` when it chains
``reencode``, differ from :data:`DEFAULT_SAVE`) and a short human-readable description of the parameters.

Families (:data:`FAMILIES`, in this order):

``crop``       keep 90 % / 75 % / 60 % of the area, off-centre, aspect jittered a little.
``recolour``   hue shift, greyscale, sepia / colour tint, saturation, brightness / contrast / gamma.
``rescan``     2-3 of: rotation <= 3 deg, slight perspective, blur, noise, low-quality JPEG, paper tint,
               white margins (what a print-and-scan or photo-of-a-print does).
``thumbnail``  long side 128-320 px.
``reencode``   JPEG q40-90 (once or twice), WebP q50-90, or a PNG round trip: pixels untouched,
               the *file* changes (see ``Variant.save``).
``overlay``    a text caption, a small logo shape, or a semi-transparent watermark (default font only).
``border``     solid border, letterbox / pillarbox to another aspect ratio, or a mat with an inner line.
``combo``      2-3 of crop / recolour / overlay / border / rescan / thumbnail / reencode, milder strengths.
``mirror``     horizontal flip (kept apart: many detectors are not flip-invariant).

Finer families for shape sweeps (not in the default mix of :data:`FAMILIES`'s first nine, but selectable):
``crop_mild`` (keep 80-92 % of the area), ``crop_strong`` (keep 40-60 %), ``hue`` (hue rotated 20-60 deg),
``grey`` (greyscale), ``tint`` (a colour cast of 15-35 %).

Strengths are meant to be realistic (what a catalogue or archive really holds): a crop keeps the subject,
a recolour keeps the picture recognisable.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

__all__ = [
    "DEFAULT_SAVE",
    "FAMILIES",
    "FAMILY_NAMES",
    "SaveSpec",
    "Variant",
    "apply_family",
    "default_font",
    "to_rgb",
]


# --------------------------------------------------------------------------------------------------
# save specs and the Variant record
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaveSpec:
    """How to write a variant: a Pillow format name plus explicit, deterministic save parameters."""

    format: str  # "JPEG" | "WEBP" | "PNG"
    params: tuple[tuple[str, object], ...] = field(default_factory=tuple)

    @property
    def ext(self) -> str:
        return {"JPEG": ".jpg", "WEBP": ".webp", "PNG": ".png"}[self.format]

    def kwargs(self) -> dict:
        return dict(self.params)

    def save(self, img: Image.Image, fp) -> None:
        """Save ``img`` to ``fp`` (path or file object) with no metadata carried over."""
        clean = img.convert("RGB") if img.mode != "RGB" else img.copy()
        clean.info = {}
        clean.save(fp, format=self.format, **self.kwargs())

    def describe(self) -> str:
        return self.format.lower() + "".join(f" {k}={v}" for k, v in self.params if k in ("quality",))


def jpeg_spec(quality: int, subsampling: int = 0) -> SaveSpec:
    # subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0
    return SaveSpec(
        "JPEG",
        (("quality", int(quality)), ("subsampling", int(subsampling)), ("optimize", False), ("progressive", False)),
    )


def webp_spec(quality: int) -> SaveSpec:
    return SaveSpec("WEBP", (("quality", int(quality)), ("method", 4), ("lossless", False), ("exact", False)))


PNG_SAVE = SaveSpec("PNG", (("compress_level", 6), ("optimize", False)))
#: How derived images are written unless the family says otherwise (like the sources: JPEG q92).
DEFAULT_SAVE = jpeg_spec(92, 0)


class Variant(NamedTuple):
    image: Image.Image
    save: SaveSpec
    desc: str


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Apply the EXIF orientation and flatten any alpha onto ``background``; return an RGB image."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    if img.mode == "I;16" or img.mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() or 1.0
        img = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def default_font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled default font at ``size`` px (falls back to the fixed bitmap font on old Pillow)."""
    size = max(6, int(size))
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _np_rng(rng: random.Random) -> np.random.Generator:
    return np.random.default_rng(rng.getrandbits(64))


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    return r - l, b - t


_WORDS = (
    "archive collection museum photo studio harbour summer winter city garden portrait morning evening "
    "river mountain market station library gallery festival coast valley village bridge tower street"
).split()
_NAMES = ["J. Smith", "A. Novak", "M. Rossi", "K. Tanaka", "L. Dubois", "S. Okafor", "P. Lind", "R. Costa"]


def _caption(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return f"\u00a9 {rng.choice(_NAMES)} {rng.randint(1950, 2023)}"
    if kind == 1:
        return f"{rng.choice(_WORDS).title()} {rng.choice(_WORDS)}, {rng.randint(1900, 2023)}"
    if kind == 2:
        return f"Photo: {rng.choice(_NAMES)} / {rng.choice(_WORDS).title()} Archive"
    return f"No. {rng.randint(1, 9999):04d} - {rng.choice(_WORDS)} {rng.choice(_WORDS)}"


# --------------------------------------------------------------------------------------------------
# crop
# --------------------------------------------------------------------------------------------------


def _crop(img: Image.Image, rng: random.Random, mild: bool = False) -> tuple[Image.Image, str]:
    w, h = img.size
    keep = rng.uniform(0.80, 0.92) if mild else rng.choice([0.90, 0.75, 0.60])
    # aspect jitter: the crop's aspect ratio may differ from the image's by up to +-15 %
    jitter = rng.uniform(-0.15, 0.15)
    cw = math.sqrt(keep) * (1.0 + jitter / 2)
    ch = keep / cw
    cw, ch = min(cw, 1.0), min(ch, 1.0)
    cw_px, ch_px = max(8, round(w * cw)), max(8, round(h * ch))
    # off-centre: anywhere in the allowed range, but never centred exactly
    fx, fy = rng.random(), rng.random()
    x0 = round((w - cw_px) * fx)
    y0 = round((h - ch_px) * fy)
    out = img.crop((x0, y0, x0 + cw_px, y0 + ch_px))
    return out, f"crop keep={keep:.2f} box=({x0},{y0},{cw_px},{ch_px})"


# --------------------------------------------------------------------------------------------------
# recolour
# --------------------------------------------------------------------------------------------------


def _hue_shift(img: Image.Image, degrees: float) -> Image.Image:
    hsv = np.array(img.convert("HSV"), dtype=np.int16)
    hsv[..., 0] = (hsv[..., 0] + round(degrees / 360.0 * 256)) % 256
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def _sepia(img: Image.Image, amount: float) -> Image.Image:
    grey = ImageOps.grayscale(img)
    sep = ImageOps.colorize(grey, black=(38, 24, 10), white=(255, 240, 200), mid=(160, 120, 80))
    return Image.blend(img, sep, amount)


def _tint(img: Image.Image, colour: tuple[int, int, int], amount: float) -> Image.Image:
    return Image.blend(img, Image.new("RGB", img.size, colour), amount)


def _gamma(img: Image.Image, g: float) -> Image.Image:
    lut = [min(255, round(255 * ((i / 255.0) ** g))) for i in range(256)]
    return img.point(lut * 3)


def _recolour(img: Image.Image, rng: random.Random, mild: bool = False) -> tuple[Image.Image, str]:
    ops = ["hue", "grey", "sepia", "tint", "saturation", "brightness_contrast", "gamma"]
    op = rng.choice(ops)
    s = 0.6 if mild else 1.0
    if op == "hue":
        deg = rng.choice([-1, 1]) * rng.uniform(12, 40) * s
        return _hue_shift(img, deg), f"recolour hue={deg:+.0f}deg"
    if op == "grey":
        return ImageOps.grayscale(img).convert("RGB"), "recolour greyscale"
    if op == "sepia":
        a = rng.uniform(0.6, 1.0) * (0.8 if mild else 1.0)
        return _sepia(img, a), f"recolour sepia={a:.2f}"
    if op == "tint":
        colour = rng.choice([(255, 170, 60), (60, 120, 255), (255, 80, 160), (80, 200, 120), (255, 230, 120)])
        a = rng.uniform(0.12, 0.30) * s
        return _tint(img, colour, a), f"recolour tint={colour} a={a:.2f}"
    if op == "saturation":
        f = rng.choice([rng.uniform(0.35, 0.7), rng.uniform(1.3, 1.8)])
        f = 1.0 + (f - 1.0) * s
        return ImageEnhance.Color(img).enhance(f), f"recolour saturation={f:.2f}"
    if op == "brightness_contrast":
        b = 1.0 + rng.uniform(-0.25, 0.25) * s
        c = 1.0 + rng.uniform(-0.30, 0.30) * s
        out = ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(b)).enhance(c)
        return out, f"recolour brightness={b:.2f} contrast={c:.2f}"
    g = math.exp(rng.choice([-1, 1]) * rng.uniform(0.2, 0.45) * s)
    return _gamma(img, g), f"recolour gamma={g:.2f}"


# --------------------------------------------------------------------------------------------------
# rescan
# --------------------------------------------------------------------------------------------------

_PAPER = (246, 242, 230)


def _perspective_coeffs(src: list[tuple[float, float]], dst: list[tuple[float, float]]) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE) mapping output points ``dst`` to input points ``src``."""
    a = []
    b = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.extend([u, v])
    sol = np.linalg.solve(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return [float(c) for c in sol]


def _rs_rotate(img, rng, strength):
    angle = rng.choice([-1, 1]) * rng.uniform(0.5, 3.0 * strength)
    out = img.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=_PAPER)
    return out, f"rotate={angle:+.1f}deg"


def _rs_perspective(img, rng, strength):
    w, h = img.size
    m = 0.03 * strength
    dst = [(0, 0), (w, 0), (w, h), (0, h)]
    src = [(x + rng.uniform(-m, m) * w, y + rng.uniform(-m, m) * h) for x, y in dst]
    coeffs = _perspective_coeffs(src, dst)
    out = img.transform((w, h), Image.PERSPECTIVE, coeffs, resample=Image.BICUBIC, fillcolor=_PAPER)
    return out, f"perspective max={m:.3f}"


def _rs_blur(img, rng, strength):
    r = rng.uniform(0.5, 1.4 * strength) * max(1.0, max(img.size) / 1024)
    return img.filter(ImageFilter.GaussianBlur(r)), f"blur={r:.2f}"


def _rs_noise(img, rng, strength):
    sigma = rng.uniform(2.0, 7.0 * strength)
    arr = np.asarray(img, dtype=np.float32)
    noise = _np_rng(rng).normal(0.0, sigma, size=arr.shape[:2] + (1,)).astype(np.float32)
    out = np.clip(arr + noise, 0, 255).round().astype(np.uint8)
    return Image.fromarray(out, "RGB"), f"noise={sigma:.1f}"


def _rs_jpeg(img, rng, strength):
    q = rng.randint(max(20, round(60 - 30 * strength)), 60)
    return _jpeg_roundtrip(img, q, 2), f"jpeg={q}"


def _rs_paper(img, rng, strength):
    a = rng.uniform(0.08, 0.22 * strength)
    # multiply towards a warm paper tone, lifting the blacks a little (ink on paper)
    arr = np.asarray(img, dtype=np.float32)
    paper = np.asarray(_PAPER, dtype=np.float32)
    out = arr * (1 - a) + a * (arr * paper / 255.0 + 0.25 * paper)
    out = np.clip(out, 0, 255).round().astype(np.uint8)
    return Image.fromarray(out, "RGB"), f"paper={a:.2f}"


def _rs_margins(img, rng, strength):
    w, h = img.size
    ms = [round(rng.uniform(0.02, 0.07 * strength + 0.01) * s) for s in (w, h, w, h)]
    out = ImageOps.expand(img, border=tuple(ms), fill=(255, 255, 255))
    return out, f"margins={ms}"


_RESCAN_OPS = {
    "rotate": _rs_rotate,
    "perspective": _rs_perspective,
    "blur": _rs_blur,
    "noise": _rs_noise,
    "jpeg": _rs_jpeg,
    "paper": _rs_paper,
    "margins": _rs_margins,
}
# physical order: margins and paper tint (the print), then geometry (placing it on the glass),
# then optics (blur), then sensor noise, then the scanner's JPEG
_RESCAN_ORDER = ["margins", "paper", "perspective", "rotate", "blur", "noise", "jpeg"]


def _rescan(img: Image.Image, rng: random.Random, mild: bool = False) -> tuple[Image.Image, str]:
    k = rng.randint(1, 2) if mild else rng.randint(2, 3)
    chosen = set(rng.sample(_RESCAN_ORDER, k))
    strength = 0.7 if mild else 1.0
    descs = []
    for name in _RESCAN_ORDER:
        if name in chosen:
            img, d = _RESCAN_OPS[name](img, rng, strength)
            descs.append(d)
    return img, "rescan " + " ".join(descs)


# --------------------------------------------------------------------------------------------------
# thumbnail
# --------------------------------------------------------------------------------------------------

_RESAMPLERS = {"lanczos": Image.LANCZOS, "bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


def _thumbnail(img: Image.Image, rng: random.Random, mild: bool = False) -> tuple[Image.Image, str]:
    w, h = img.size
    long_side = max(w, h)
    target = rng.randint(200, 320) if mild else rng.randint(128, 320)
    if target >= long_side:  # already small: still shrink it, to 60 % (but not below 64 px)
        target = max(64, round(long_side * 0.6))
    scale = target / long_side
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    name = rng.choice(sorted(_RESAMPLERS))
    return img.resize(size, resample=_RESAMPLERS[name]), f"thumbnail long={target} {name}"


# --------------------------------------------------------------------------------------------------
# reencode
# --------------------------------------------------------------------------------------------------


def _jpeg_roundtrip(img: Image.Image, quality: int, subsampling: int = 2) -> Image.Image:
    buf = io.BytesIO()
    jpeg_spec(quality, subsampling).save(img, buf)
    buf.seek(0)
    with Image.open(buf) as im:
        return im.convert("RGB")


def _reencode(img: Image.Image, rng: random.Random, mild: bool = False) -> tuple[Image.Image, SaveSpec, str]:
    kind = rng.choices(["jpeg", "jpeg2x", "webp", "png"], weights=[45, 10, 25, 20])[0]
    lo = 55 if mild else 40
    if kind == "jpeg":
        q = rng.randint(lo, 90)
        sub = rng.choice([0, 2])
        return img, jpeg_spec(q, sub), f"reencode jpeg q={q} sub={sub}"
    if kind == "jpeg2x":
        q1 = rng.randint(max(lo, 50), 90)
        q2 = rng.randint(lo, 85)
        return _jpeg_roundtrip(img, q1, 2), jpeg_spec(q2, 2), f"reencode jpeg q={q1} then q={q2}"
    if kind == "webp":
        q = rng.randint(max(lo, 50), 90)
        return img, webp_spec(q), f"reencode webp q={q}"
    return img, PNG_SAVE, "reencode png"


# --------------------------------------------------------------------------------------------------
# overlay
# --------------------------------------------------------------------------------------------------


def _ov_caption(img: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    w, h = img.size
    text = _caption(rng)
    size = max(9, round(min(w, h) * rng.uniform(0.035, 0.06)))
    font = default_font(size)
    base = img.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    tw, th = _text_size(d, text, font)
    pad = max(2, size // 3)
    style = rng.choice(["bar", "plain"])
    at_top = rng.random() < 0.25
    y = pad if at_top else h - th - 3 * pad
    x = rng.choice([pad, max(pad, (w - tw) // 2), max(pad, w - tw - 2 * pad)])
    if style == "bar":
        d.rectangle((0, y - pad, w, y + th + 2 * pad), fill=(0, 0, 0, rng.randint(110, 180)))
        d.text((x, y), text, font=font, fill=(255, 255, 255, 255))
    else:
        d.text((x, y), text, font=font, fill=(255, 255, 255, 255), stroke_width=max(1, size // 12),
               stroke_fill=(0, 0, 0, 255))
    base.alpha_composite(layer)
    return base.convert("RGB"), f"overlay caption {style} {'top' if at_top else 'bottom'} size={size}"


def _ov_logo(img: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    w, h = img.size
    s = max(8, round(min(w, h) * rng.uniform(0.07, 0.13)))
    m = max(2, round(min(w, h) * 0.03))
    corner = rng.choice(["tl", "tr", "bl", "br"])
    x0 = m if corner[1] == "l" else w - s - m
    y0 = m if corner[0] == "t" else h - s - m
    colour = rng.choice([(220, 30, 40), (30, 90, 200), (250, 200, 0), (255, 255, 255), (20, 140, 60)])
    alpha = rng.randint(170, 255)
    base = img.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    shape = rng.choice(["circle", "square", "triangle", "badge"])
    box = (x0, y0, x0 + s, y0 + s)
    fill = colour + (alpha,)
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rounded_rectangle(box, radius=max(1, s // 6), fill=fill)
    elif shape == "triangle":
        d.polygon([(x0 + s / 2, y0), (x0 + s, y0 + s), (x0, y0 + s)], fill=fill)
    else:
        d.ellipse(box, fill=fill, outline=(255, 255, 255, alpha), width=max(1, s // 12))
        letter = rng.choice("ABCDEKMRSTX")
        font = default_font(round(s * 0.6))
        tw, th = _text_size(d, letter, font)
        ink = (0, 0, 0, 255) if sum(colour) > 500 else (255, 255, 255, 255)
        d.text((x0 + (s - tw) / 2, y0 + (s - th) / 2 - s * 0.08), letter, font=font, fill=ink)
    base.alpha_composite(layer)
    return base.convert("RGB"), f"overlay logo {shape} {corner} size={s}"


def _ov_watermark(img: Image.Image, rng: random.Random) -> tuple[Image.Image, str]:
    w, h = img.size
    text = rng.choice(["SAMPLE", "PREVIEW", "\u00a9 ARCHIVE", "COPYRIGHT", "PROOF", "DRAFT"])
    size = max(10, round(min(w, h) * rng.uniform(0.10, 0.18)))
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    font = default_font(size)
    tw, th = _text_size(probe, text, font)
    if tw > 0.8 * w:  # keep the whole word on the picture
        size = max(10, int(size * 0.8 * w / tw))
        font = default_font(size)
        tw, th = _text_size(probe, text, font)
    alpha = rng.randint(110, 170)
    light = rng.random() < 0.7
    ink, edge = ((255, 255, 255), (0, 0, 0)) if light else ((0, 0, 0), (255, 255, 255))
    sw = max(1, size // 16)
    tile = Image.new("RGBA", (tw + 4 * sw + 8, th + 4 * sw + 12), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text(
        (4 + sw, 2 + sw), text, font=font, fill=ink + (alpha,), stroke_width=sw, stroke_fill=edge + (alpha * 3 // 4,)
    )
    angle = rng.choice([0.0, rng.uniform(-35, 35)])
    tile = tile.rotate(angle, resample=Image.BICUBIC, expand=True)
    base = img.convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    cx = round((w - tile.width) / 2 + rng.uniform(-0.1, 0.1) * w)
    cy = round((h - tile.height) / 2 + rng.uniform(-0.1, 0.1) * h)
    layer.paste(tile, (cx, cy), tile)
    base.alpha_composite(layer)
    return base.convert("RGB"), f"overlay watermark '{text}' size={size} alpha={alpha} angle={angle:.0f}"


def _overlay(img: Image.Image, rng: random.Random, mild: bool = False) -> tuple[Image.Image, str]:
    ops = {"caption": _ov_caption, "logo": _ov_logo, "watermark": _ov_watermark}
    names = sorted(ops)
    k = 2 if (not mild and rng.random() < 0.25) else 1
    descs = []
    for name in rng.sample(names, k):
        img, d = ops[name](img, rng)
        descs.append(d)
    return img, "; ".join(descs)


# --------------------------------------------------------------------------------------------------
# border
# --------------------------------------------------------------------------------------------------

_BORDER_COLOURS = [(255, 255, 255), (0, 0, 0), (128, 128, 128), (245, 238, 220), (30, 30, 60), (90, 20, 20)]


def _border(img: Image.Image, rng: random.Random, mild: bool = False) -> tuple[Image.Image, str]:
    w, h = img.size
    kind = rng.choice(["solid", "letterbox", "mat"])
    colour = rng.choice(_BORDER_COLOURS)
    s = 0.6 if mild else 1.0
    if kind == "solid":
        frac = rng.uniform(0.02, 0.08) * s
        uneven = rng.random() < 0.3
        ms = [round(max(w, h) * frac * (rng.uniform(0.6, 1.4) if uneven else 1.0)) for _ in range(4)]
        ms = [max(2, m) for m in ms]
        return ImageOps.expand(img, border=tuple(ms), fill=colour), f"border solid {colour} {ms}"
    if kind == "letterbox":
        aspect = w / h
        targets = [a for a in (1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3) if abs(math.log(a / aspect)) > 0.12]
        # at most ~45 % extra canvas, so the picture stays the main content
        targets = [a for a in targets if max(a / aspect, aspect / a) <= 1.45] or [aspect * 1.25]
        t = rng.choice(targets)
        if t > aspect:
            nw, nh = round(h * t), h
        else:
            nw, nh = w, round(w / t)
        bar = rng.choice([(0, 0, 0), (255, 255, 255), (20, 20, 20)])
        canvas = Image.new("RGB", (nw, nh), bar)
        canvas.paste(img, ((nw - w) // 2, (nh - h) // 2))
        return canvas, f"border letterbox aspect={t:.2f} {bar}"
    # mat: thin dark inner line, then a wide light mat
    line = max(1, round(max(w, h) * 0.004))
    inner = ImageOps.expand(img, border=line, fill=rng.choice([(0, 0, 0), (60, 40, 20), (120, 120, 120)]))
    frac = rng.uniform(0.04, 0.10) * s
    m = max(3, round(max(w, h) * frac))
    mat = rng.choice([(255, 255, 255), (245, 238, 220), (230, 230, 230)])
    return ImageOps.expand(inner, border=m, fill=mat), f"border mat {mat} {m}px line={line}"


# --------------------------------------------------------------------------------------------------
# combo, mirror
# --------------------------------------------------------------------------------------------------

# the order components are applied in when chained
_COMBO_ORDER = ["crop", "recolour", "border", "overlay", "rescan", "thumbnail", "reencode"]


def _mirror(img: Image.Image, rng: random.Random) -> Variant:
    return Variant(ImageOps.mirror(img), DEFAULT_SAVE, "mirror horizontal")


def _as_family(fn) -> Callable[[Image.Image, random.Random], Variant]:
    def family(img: Image.Image, rng: random.Random) -> Variant:
        out, desc = fn(img, rng)
        return Variant(out, DEFAULT_SAVE, desc)

    family.__name__ = fn.__name__.lstrip("_")
    family.__doc__ = fn.__doc__
    return family


def _combo_part(name: str, img: Image.Image, rng: random.Random) -> tuple[Image.Image, SaveSpec, str]:
    if name == "reencode":
        return _reencode(img, rng, mild=True)
    fn = {
        "crop": _crop,
        "recolour": _recolour,
        "border": _border,
        "overlay": _overlay,
        "rescan": _rescan,
        "thumbnail": _thumbnail,
    }[name]
    out, desc = fn(img, rng, mild=True)
    return out, DEFAULT_SAVE, desc


def combo(img: Image.Image, rng: random.Random) -> Variant:
    """2-3 families chained at moderate strength (never mirror)."""
    k = rng.randint(2, 3)
    chosen = set(rng.sample(_COMBO_ORDER, k))
    save = DEFAULT_SAVE
    descs = []
    for name in _COMBO_ORDER:
        if name in chosen:
            img, save, d = _combo_part(name, img, rng)
            descs.append(d)
    return Variant(img, save, "combo[" + " | ".join(descs) + "]")


def reencode(img: Image.Image, rng: random.Random) -> Variant:
    """Same pixels (or a JPEG generation earlier), written in another format / quality."""
    out, save, desc = _reencode(img, rng)
    return Variant(out, save, desc)


crop = _as_family(_crop)


def _crop_keep(img: Image.Image, rng: random.Random, lo: float, hi: float) -> tuple[Image.Image, str]:
    w, h = img.size
    keep = rng.uniform(lo, hi)
    jitter = rng.uniform(-0.15, 0.15)
    cw = min(math.sqrt(keep) * (1.0 + jitter / 2), 1.0)
    ch = min(keep / cw, 1.0)
    cw_px, ch_px = max(8, round(w * cw)), max(8, round(h * ch))
    x0, y0 = round((w - cw_px) * rng.random()), round((h - ch_px) * rng.random())
    return img.crop((x0, y0, x0 + cw_px, y0 + ch_px)), f"crop keep={keep:.2f} box=({x0},{y0},{cw_px},{ch_px})"


def crop_mild(img: Image.Image, rng: random.Random) -> Variant:
    """Keep 80-92 % of the area, off-centre."""
    out, desc = _crop_keep(img, rng, 0.80, 0.92)
    return Variant(out, DEFAULT_SAVE, desc)


def crop_strong(img: Image.Image, rng: random.Random) -> Variant:
    """Keep 40-60 % of the area, off-centre (the subject may be cut)."""
    out, desc = _crop_keep(img, rng, 0.40, 0.60)
    return Variant(out, DEFAULT_SAVE, desc)


def hue(img: Image.Image, rng: random.Random) -> Variant:
    deg = rng.choice([-1, 1]) * rng.uniform(20, 60)
    return Variant(_hue_shift(img, deg), DEFAULT_SAVE, f"hue={deg:+.0f}deg")


def grey(img: Image.Image, rng: random.Random) -> Variant:
    return Variant(ImageOps.grayscale(img).convert("RGB"), DEFAULT_SAVE, "greyscale")


def tint(img: Image.Image, rng: random.Random) -> Variant:
    colour = rng.choice([(255, 170, 60), (60, 120, 255), (255, 80, 160), (80, 200, 120), (255, 230, 120), (120, 60, 20)])
    a = rng.uniform(0.15, 0.35)
    return Variant(_tint(img, colour, a), DEFAULT_SAVE, f"tint={colour} a={a:.2f}")
recolour = _as_family(_recolour)
rescan = _as_family(_rescan)
thumbnail = _as_family(_thumbnail)
overlay = _as_family(_overlay)
border = _as_family(_border)
mirror = _mirror

#: family name -> ``(img, rng) -> Variant``
FAMILIES: dict[str, Callable[[Image.Image, random.Random], Variant]] = {
    "crop": crop,
    "recolour": recolour,
    "rescan": rescan,
    "thumbnail": thumbnail,
    "reencode": reencode,
    "overlay": overlay,
    "border": border,
    "combo": combo,
    "mirror": mirror,
}
#: the default mix of :func:`embeddr.bench.make_benchmark` (the nine families above)
DEFAULT_FAMILIES: tuple[str, ...] = tuple(FAMILIES)
FAMILIES.update({"crop_mild": crop_mild, "crop_strong": crop_strong, "hue": hue, "grey": grey, "tint": tint})
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)


def apply_family(name: str, img: Image.Image, rng: random.Random) -> Variant:
    """Apply family ``name`` to ``img`` (converted to RGB first); raises KeyError for unknown names."""
    try:
        fn = FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown transform family {name!r}; known: {', '.join(FAMILIES)}") from None
    if img.mode != "RGB":
        img = to_rgb(img)
    return fn(img, rng)
