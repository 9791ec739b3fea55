"""Decode stage: one file -> an RGB image of the size a model needs, or a :class:`DecodeError`.

Handles what real collections contain: EXIF orientation, alpha (flattened on white),
palette and CMYK images, 16-bit and float greyscale, the first frame of animated and
multipage files. JPEGs are decoded in draft mode (DCT scaling) at no less than the size
the model needs, which makes decoding large photos several times faster. Pillow's
decompression-bomb guard stays on, with a configurable pixel limit.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from .errors import DecodeError

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's default bomb limit (2x MAX_IMAGE_PIXELS)
HASH_CHUNK = 1 << 20

try:  # HEIF/AVIF when the optional plugin is installed
    from pillow_heif import register_heif_opener  # type: ignore

    register_heif_opener()
except Exception:  # pragma: no cover - optional
    pass


@dataclass(frozen=True)
class ImageMeta:
    width: int  # as displayed, after EXIF orientation
    height: int
    format: str  # Pillow's format name (JPEG, PNG, WEBP, ...)
    content_width: int | None = None  # the picture without uniform borders / padding (None: no border)
    content_height: int | None = None


BORDER_TOLERANCE = 24  # colour difference (0-255) still counted as the border's colour (JPEG noise)
_BORDER_LUT = [0 if v <= BORDER_TOLERANCE else 255 for v in range(256)]


def content_size(image: Image.Image, width: int, height: int) -> tuple[int, int] | None:
    """Size, at ``width`` x ``height``, of ``image`` without a uniform border (letterbox, padding, frame).

    The border colour is taken from the four corners, which must agree; returns None when there is no
    such border (or the whole image is that colour). ``image`` may be a reduced decode of the file.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    if w < 8 or h < 8:
        return None
    corners = [rgb.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    if max(max(abs(a - b) for a, b in zip(c, corners[0])) for c in corners) > BORDER_TOLERANCE:
        return None
    background = Image.new("RGB", rgb.size, corners[0])
    diff = ImageChops.difference(rgb, background).convert("L").point(_BORDER_LUT)
    box = diff.getbbox()
    if box is None:
        return None
    bw, bh = box[2] - box[0], box[3] - box[1]
    if bw >= w - 1 and bh >= h - 1:
        return None  # no border
    return max(1, round(width * bw / w)), max(1, round(height * bh / h))


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes (hex): the identity of exact duplicates."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode == "F":
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        else:
            arr = arr / hi * 255.0
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV, I;16 variants


def load_image(path: str, *, min_side: int | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               data: bytes | None = None) -> tuple[Image.Image, ImageMeta]:
    """Open ``path`` (or decode ``data``, the bytes fetched for the URL ``path``) and return ``(rgb_image, meta)``.

    ``min_side``: the smallest side the caller needs; JPEGs are draft-decoded to no less.
    ``max_pixels``: refuse images with more pixels (decompression-bomb guard); ``None`` or 0 disables.
    Raises :class:`DecodeError` naming the file and the reason.
    """
    try:
        size = os.stat(path).st_size if data is None else len(data)
    except FileNotFoundError:
        raise DecodeError(path, "file not found (or a broken symlink)") from None
    except OSError as exc:
        raise DecodeError(path, f"cannot stat: {exc.strerror or exc}") from None
    if size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    limit = max_pixels or None
    previous_limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = limit
            try:
                im = Image.open(path if data is None else io.BytesIO(data))
            finally:  # the limit is per call: leave Pillow's process-wide setting as it was
                Image.MAX_IMAGE_PIXELS = previous_limit
    except PermissionError:
        raise DecodeError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise DecodeError(path, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(path, f"decompression bomb guard: {exc}; raise --max-pixels to allow it") from None
    except OSError as exc:
        raise DecodeError(path, f"cannot open: {exc}") from None
    try:
        with im:
            w, h = im.size
            if limit and w * h > limit:
                raise DecodeError(path, f"decompression bomb guard: {w}x{h} = {w * h} pixels exceeds the limit of {limit}; raise --max-pixels to allow it")
            fmt = im.format or "unknown"
            try:
                im.seek(0)  # first frame of animated / multipage files
            except EOFError:
                pass
            if min_side and fmt == "JPEG":
                im.draft("RGB", (min_side, min_side))
            exif_orientation = 1
            try:
                exif_orientation = int(im.getexif().get(0x0112, 1))
            except Exception:  # corrupt EXIF: ignore orientation, keep the pixels
                pass
            im.load()
            if exif_orientation in (5, 6, 7, 8):
                w, h = h, w
            try:
                oriented = ImageOps.exif_transpose(im) if exif_orientation != 1 else im
            except Exception:
                oriented = im
            rgb = _to_rgb(oriented)
            if rgb is im:
                rgb = im.copy()
            content = content_size(rgb, w, h)
            return rgb, ImageMeta(width=w, height=h, format=fmt, content_width=content[0] if content else None,
                                  content_height=content[1] if content else None)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError(path, f"decompression bomb guard: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, MemoryError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            reason = f"truncated image ({reason})"
        raise DecodeError(path, f"cannot decode: {reason}") from None


def fit(image: Image.Image, size: int, mode: str) -> np.ndarray:
    """Resize an RGB image for a model; returns a uint8 (size, size, 3) array.

    ``squash``: resize to size x size ignoring aspect (keeps all content: best for copy detection);
    ``shortest`` (also spelt ``center_crop``): shortest side to ``size`` then centre crop (CLIP's preprocessing);
    ``pad``: fit inside and pad with white.
    """
    if mode == "squash":
        out = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    elif mode in ("shortest", "center_crop"):
        w, h = image.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        out = image.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (nw - size) // 2, (nh - size) // 2
        out = out.crop((left, top, left + size, top + size))
    elif mode == "pad":
        out = ImageOps.pad(image, (size, size), color=(255, 255, 255))
    else:
        raise ValueError(f"unknown resize mode {mode!r}; use squash, shortest (center_crop) or pad")
    return np.asarray(out, dtype=np.uint8)
