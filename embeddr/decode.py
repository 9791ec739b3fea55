"""Decode stage: one file -> an RGB image of the size a model needs, or a :class:`DecodeError`.

Handles what real collections contain: EXIF orientation, alpha (flattened on white),
palette and CMYK images, 16-bit and float greyscale, the first frame of animated and
multipage files. JPEGs are decoded in draft mode (DCT scaling) at no less than the size
the model needs, which makes decoding large photos several times faster.

Pixel budget (``--max-pixels``, default :data:`DEFAULT_MAX_PIXELS`): the width and height are
read from the file's header, and an image whose decode would allocate more pixels than the
budget is refused BEFORE any pixel is allocated (a 540 KB PNG can declare 13,300 x 13,300
pixels: 3.5 GB once decoded). For JPEGs the budget applies to the draft (reduced) decode, so
large camera JPEGs still scan. Pillow's own limit is replaced by this one.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from .discover import not_regular
from .errors import DecodeError

DEFAULT_MAX_PIXELS = 64_000_000  # pixels one decode may allocate (--max-pixels): about 192 MB as RGB
HASH_CHUNK = 1 << 20
_OPEN_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is process-wide: set it around open only

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
BLANK_FRACTION = 0.005  # content (without uniform borders) under this share of the picture: blank (embeddr.normalize)
# ... but only when the rest is one colour: at least UNIFORM_SHARE of the pixels away from the content box (more
# than UNIFORM_MARGIN pixels) within UNIFORM_TOLERANCE of the corners' colour. A very dark (or pale) picture whose
# shading stays within BORDER_TOLERANCE of its corners, with a few brighter specks, is not a blank page
UNIFORM_TOLERANCE = 4
UNIFORM_SHARE = 0.98
UNIFORM_MARGIN = 8


def content_size(image: Image.Image, width: int, height: int) -> tuple[int, int] | None:
    """Size, at ``width`` x ``height``, of ``image`` without a uniform border (letterbox, padding, frame).

    The border colour is taken from the four corners, which must agree; returns None when there is no
    such border (or the whole image is that colour). A content box so small that the picture would count as
    blank (under :data:`BLANK_FRACTION`) is kept only when the rest is one colour (:func:`uniform_outside`): a
    very dark picture with a few brighter specks has no border, it is all content. ``image`` may be a reduced
    decode of the file.
    """
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    if w < 8 or h < 8:
        return None
    corners = [rgb.getpixel(xy) for xy in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1))]
    if max(max(abs(a - b) for a, b in zip(c, corners[0])) for c in corners) > BORDER_TOLERANCE:
        return None
    background = Image.new("RGB", rgb.size, corners[0])
    grey = ImageChops.difference(rgb, background).convert("L")
    box = grey.point(_BORDER_LUT).getbbox()
    if box is None:
        return None
    bw, bh = box[2] - box[0], box[3] - box[1]
    if bw >= w - 1 and bh >= h - 1:
        return None  # no border
    if bw * bh < BLANK_FRACTION * w * h and not uniform_outside(np.asarray(grey), box):
        return None  # not a border: shading within the tolerance, all of it content
    return max(1, round(width * bw / w)), max(1, round(height * bh / h))


def uniform_outside(diff: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Whether the pixels more than :data:`UNIFORM_MARGIN` from ``box`` (left, top, right, bottom) are one colour:
    at least :data:`UNIFORM_SHARE` of them within :data:`UNIFORM_TOLERANCE` of it (``diff``: each pixel's grey
    difference to the corners' colour). Blank pages are 100 % so, rendered or JPEG (a page number's JPEG ringing
    stays within the margin); a dark wallpaper's crop, its shading a few levels deep, 4-97 %."""
    outside = np.ones(diff.shape, bool)
    m = UNIFORM_MARGIN
    outside[max(0, box[1] - m):box[3] + m, max(0, box[0] - m):box[2] + m] = False
    n = int(outside.sum())
    return n == 0 or int((diff[outside] <= UNIFORM_TOLERANCE).sum()) >= UNIFORM_SHARE * n


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes (hex): the identity of exact duplicates.

    Only regular files are read (a FIFO or a device named ``.jpg`` raises ``OSError`` instead of
    blocking or reading forever)."""
    h = hashlib.sha256()
    with open(path, "rb", opener=_open_nonblocking) as fh:
        why = not_regular(os.fstat(fh.fileno()).st_mode)
        if why:
            raise OSError(0, why)
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def read_file(path: str | os.PathLike) -> bytes:
    """The file's bytes (regular files only, as :func:`content_hash`): for decoders that work from memory."""
    with open(path, "rb", opener=_open_nonblocking) as fh:
        why = not_regular(os.fstat(fh.fileno()).st_mode)
        if why:
            raise OSError(0, why)
        return fh.read()


def jpeg_header(path: str, data: bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[ImageMeta, int] | None:
    """``(meta, exif_orientation)`` of the JPEG ``data`` from its header alone (width and height as displayed,
    the EXIF orientation 1-8 to apply to the decoded pixels), when a batched full-size decoder can take it:
    RGB or greyscale, within ``max_pixels`` at full size. Else None (not a JPEG, CMYK/YCCK, over the budget,
    an unreadable header): the CPU decoder decides."""
    try:
        with _OPEN_LOCK:
            previous_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = previous_limit
        with im:
            if im.format != "JPEG" or im.mode not in ("RGB", "L"):  # CMYK, YCCK: Pillow converts them, nvJPEG does not
                return None
            w, h = im.size
            if max_pixels and w * h > max_pixels:
                return None
            orientation = 1
            try:
                orientation = int(im.getexif().get(0x0112, 1))
            except Exception:  # corrupt EXIF: as load_image, keep the pixels as stored
                pass
            if orientation not in range(1, 9):
                orientation = 1
            if orientation in (5, 6, 7, 8):
                w, h = h, w
            return ImageMeta(width=w, height=h, format="JPEG"), orientation
    except Exception:
        return None


def bomb_message(w: int, h: int, limit: int, reduced: tuple[int, int] | None = None) -> str:
    at = f" (decoded at {reduced[0]}x{reduced[1]})" if reduced and reduced != (w, h) else ""
    n = reduced[0] * reduced[1] if reduced else w * h
    return (f"decompression bomb guard: image is {w}x{h}{at} = {n:,} pixels to decode, over the --max-pixels budget of {limit:,} "
            f"(about {n * 3 / 1e6:,.0f} MB as RGB); raise --max-pixels to allow it")


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
    ``max_pixels``: the pixel budget (``--max-pixels``): refuse, before decoding, an image whose decode
    would allocate more pixels (for JPEGs: the reduced draft decode); ``None`` or 0 disables.
    Raises :class:`DecodeError` naming the file and the reason.
    """
    if data is None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DecodeError(path, "file not found (or a broken symlink)") from None
        except OSError as exc:
            raise DecodeError(path, f"cannot stat: {exc.strerror or exc}") from None
        why = not_regular(st.st_mode)
        if why:
            raise DecodeError(path, why)
        size = st.st_size
    else:
        size = len(data)
    if size == 0:
        raise DecodeError(path, "empty file (0 bytes)")
    limit = max_pixels or None
    try:
        with _OPEN_LOCK:  # reads the header only; the budget below replaces Pillow's guard
            previous_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(path if data is None else io.BytesIO(data))
            finally:
                Image.MAX_IMAGE_PIXELS = previous_limit
    except PermissionError:
        raise DecodeError(path, "permission denied") from None
    except UnidentifiedImageError:
        raise DecodeError(path, "not a recognised image format") from None
    except OSError as exc:
        raise DecodeError(path, f"cannot open: {exc}") from None
    try:
        with im:
            w, h = im.size
            if min_side and im.format == "JPEG":
                im.draft("RGB", (min_side, min_side))  # DCT scaling: only the reduced size is allocated
            if limit and im.size[0] * im.size[1] > limit:
                raise DecodeError(path, bomb_message(w, h, limit, im.size))
            fmt = im.format or "unknown"
            try:
                im.seek(0)  # first frame of animated / multipage files
            except EOFError:
                pass
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
    except Image.DecompressionBombError:
        raise DecodeError(path, bomb_message(*im.size, limit or 0) if limit else "image too large for Pillow's own guard") from None
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
