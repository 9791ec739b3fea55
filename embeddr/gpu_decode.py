"""JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg(device="cuda")``), batched.

On a GPU machine, decoding ~1 MP JPEGs on the CPU (Pillow) feeds an encoder far slower than the GPU can
encode; nvJPEG decodes a whole batch at once. :func:`decode_batch` reads the files (CPU threads), decodes the
JPEGs as one batch on ``device`` (EXIF orientation applied), resizes each to the model's input on the device
(bilinear with antialiasing, the ``squash`` or ``shortest``-side-then-centre-crop geometry of
:func:`embeddr.decode.fit`) and returns a uint8 NHWC batch; other formats, and JPEGs nvJPEG refuses (CMYK,
damaged), are decoded on the CPU by :func:`embeddr.decode.load_image` / :func:`embeddr.decode.fit`. The
resize differs slightly from Pillow's, so vectors differ slightly from a CPU scan's (cosine >= 0.99 is checked
by scripts/gpu_check.sh).

:func:`decode_jpegs` is what ``scan`` uses when its encoder runs on CUDA (``embeddr.pipeline``): the decode
workers hash and read each file and parse its header, the main process decodes the JPEG bytes of a batch here
on the encoder's device, measures each picture's uniform border on the device (as
:func:`embeddr.decode.content_size` does on the CPU) and hands the resized batch to the encoder. The same
code runs on torch's CPU device, which is how the tests check it on a machine without a GPU.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .decode import BLANK_FRACTION, uniform_outside

JPEG_MAGIC = b"\xff\xd8\xff"
RESIZE_MODES = ("squash", "shortest", "center_crop")  # the geometries done on the device ("pad" stays on the CPU)


def available() -> bool:
    """torchvision (with torch) can be imported: the batched JPEG decoder exists here."""
    try:
        _io()
    except Exception:
        return False
    return True


def _io():
    """torchvision.io (0.29 deprecates its image decoders in favour of TorchCodec, with a warning at each
    call; decode_jpeg is still the batched nvJPEG decoder this path needs: see :func:`_decode`)."""
    import torchvision.io as tio

    return tio


def _decode(data, device: str):
    import warnings

    tio = _io()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # (apply_exif_orientation is ignored on CUDA: orient() applies the header's orientation on any device)
        return tio.decode_jpeg(data, mode=tio.ImageReadMode.RGB, device=device)


def orient(img, orientation: int):
    """``img`` (C, H, W) as displayed: EXIF orientation 1-8 applied as Pillow's ``ImageOps.exif_transpose``."""
    import torch

    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-1).flip(-2)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-1, -2)
    if orientation == 6:
        return torch.rot90(img, -1, dims=(-2, -1))
    if orientation == 7:
        return img.transpose(-1, -2).flip(-1).flip(-2)
    if orientation == 8:
        return torch.rot90(img, 1, dims=(-2, -1))
    return img


def exif_orientation(data: bytes) -> int:
    from io import BytesIO

    from PIL import Image

    try:
        with Image.open(BytesIO(data)) as im:
            o = int(im.getexif().get(0x0112, 1))
            return o if o in range(1, 9) else 1
    except Exception:
        return 1


def _resize(img, size: int, mode: str):
    import torch.nn.functional as F

    c, h, w = img.shape
    x = img[None].float()
    if mode in ("shortest", "center_crop"):
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top : top + size, left : left + size]
    else:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round().clamp(0, 255).to(dtype=img.dtype)


BORDER_TOLERANCE = 24  # as embeddr.decode.BORDER_TOLERANCE


def content_box(img) -> tuple[int, int] | None:
    """Size of ``img`` (uint8 (3, H, W), any device) without a uniform border, or None: the same rule as
    :func:`embeddr.decode.content_size` (four agreeing corners, difference to their colour as Pillow's
    ``L`` conversion, over the tolerance)."""
    import torch

    _, h, w = img.shape
    if w < 8 or h < 8:
        return None
    x = img.to(torch.int32)
    corners = x[:, [0, 0, h - 1, h - 1], [0, w - 1, 0, w - 1]]
    if int((corners - corners[:, :1]).abs().max()) > BORDER_TOLERANCE:
        return None
    d = (x - corners[:, :1, None]).abs()
    lum = (d[0] * 19595 + d[1] * 38470 + d[2] * 7471 + 0x8000) >> 16  # Pillow's RGB -> L
    mask = lum > BORDER_TOLERANCE
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    if len(rows) == 0:
        return None
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    bh, bw = int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
    if bw >= w - 1 and bh >= h - 1:
        return None
    if bw * bh < BLANK_FRACTION * w * h:  # a blank picture only when the rest is one colour
        top, left = int(rows[0]), int(cols[0])
        if not uniform_outside(lum.cpu().numpy(), (left, top, left + bw, top + bh)):
            return None
    return bw, bh


def decode_jpegs(datas: list[bytes], size: int, resize: str, device: str,
                 orientations: list[int] | None = None) -> list[tuple[np.ndarray, tuple[int, int], tuple[int, int] | None] | None]:
    """Decode JPEG bytes as one batch on ``device``, turn each as its EXIF ``orientations`` say (read from the
    bytes when not given) and resize it to ``size``.

    Per input: ``(uint8 (size, size, 3) pixels, (width, height) as decoded, content box or None)``, or None
    when the decoder refuses that file (the caller decodes it on the CPU or records the error)."""
    import torch

    if not datas:
        return []
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        imgs = _decode(tensors, device)
    except RuntimeError:  # one bad file fails the batch: decode one by one
        imgs = []
        for t in tensors:
            try:
                imgs.append(_decode(t, device))
            except RuntimeError:
                imgs.append(None)
    out: list = [None] * len(datas)
    if orientations is None:
        orientations = [exif_orientation(d) for d in datas]
    done = [(i, orient(img, orientations[i])) for i, img in enumerate(imgs)
            if img is not None and img.ndim == 3 and img.shape[0] == 3]
    if not done:
        return out
    small = torch.stack([_resize(img, size, resize) for _, img in done]).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    for j, (i, img) in enumerate(done):
        out[i] = (small[j], (int(img.shape[2]), int(img.shape[1])), content_box(img))
    return out


def decode_batch(paths: list[str | Path], size: int, *, resize: str = "squash", device: str = "cuda",
                 threads: int = 8) -> tuple[np.ndarray, list[int]]:
    """Decode and resize ``paths``: (uint8 (n, size, size, 3) for the files that decoded, their indices in
    ``paths``). JPEGs on ``device`` in one batch, the rest on the CPU."""
    import torch

    with ThreadPoolExecutor(threads) as pool:
        blobs = list(pool.map(lambda p: Path(p).read_bytes(), paths))
    jpeg = [i for i, b in enumerate(blobs) if b[:3] == JPEG_MAGIC]
    out: dict[int, np.ndarray] = {}
    if jpeg:
        datas = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg]
        try:
            imgs = _decode(datas, device)
        except RuntimeError:  # one bad file fails the batch: decode one by one, the bad ones on the CPU
            imgs = []
            for d in datas:
                try:
                    imgs.append(_decode(d, device))
                except RuntimeError:
                    imgs.append(None)
        done = [(i, _resize(orient(img, exif_orientation(blobs[i])), size, resize)) for i, img in zip(jpeg, imgs) if img is not None]
        if done:
            stacked = torch.stack([t for _, t in done]).permute(0, 2, 3, 1).contiguous().cpu().numpy()
            out.update({i: stacked[j] for j, (i, _) in enumerate(done)})
    for i in range(len(paths)):
        if i not in out:
            from .decode import fit, load_image

            try:
                out[i] = fit(load_image(str(paths[i]), min_side=size)[0], size, resize)
            except Exception:  # noqa: BLE001 - an unreadable file is left out; the caller reports it
                continue
    order = sorted(out)
    if not order:
        return np.zeros((0, size, size, 3), np.uint8), []
    return np.stack([out[i] for i in order]), order
