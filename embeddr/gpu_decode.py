"""JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg(device="cuda")``), batched.

On a GPU machine, decoding ~1 MP JPEGs on the CPU (Pillow) feeds an encoder far slower than the GPU can
encode; nvJPEG decodes a whole batch at once. :func:`decode_batch` reads the files (CPU threads), decodes the
JPEGs as one batch on ``device`` (EXIF orientation applied), resizes each to the model's input on the device
(bilinear with antialiasing, the ``squash`` or ``shortest``-side-then-centre-crop geometry of
:func:`embeddr.decode.fit`) and returns a uint8 NHWC batch; other formats, and JPEGs nvJPEG refuses (CMYK,
damaged), are decoded on the CPU by :func:`embeddr.decode.load_image` / :func:`embeddr.decode.fit`. The
resize differs slightly from Pillow's, so vectors differ slightly from a CPU scan's (cosine >= 0.99 is checked
by scripts/gpu_check.sh); it is therefore used by the GPU check and by callers who opt in, not by default.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

JPEG_MAGIC = b"\xff\xd8\xff"


def _resize(img, size: int, mode: str):
    import torch.nn.functional as F

    c, h, w = img.shape
    x = img[None].float()
    if mode == "shortest":
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top : top + size, left : left + size]
    else:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].round().clamp(0, 255).to(dtype=img.dtype)


def decode_batch(paths: list[str | Path], size: int, *, resize: str = "squash", device: str = "cuda",
                 threads: int = 8) -> tuple[np.ndarray, list[int]]:
    """Decode and resize ``paths``: (uint8 (n, size, size, 3) for the files that decoded, their indices in
    ``paths``). JPEGs on ``device`` in one batch, the rest on the CPU."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    with ThreadPoolExecutor(threads) as pool:
        blobs = list(pool.map(lambda p: Path(p).read_bytes(), paths))
    jpeg = [i for i, b in enumerate(blobs) if b[:3] == JPEG_MAGIC]
    out: dict[int, np.ndarray] = {}
    if jpeg:
        datas = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in jpeg]
        try:
            imgs = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True)
        except RuntimeError:  # one bad file fails the batch: decode one by one, the bad ones on the CPU
            imgs = []
            for d in datas:
                try:
                    imgs.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device, apply_exif_orientation=True))
                except RuntimeError:
                    imgs.append(None)
        done = [(i, _resize(img, size, resize)) for i, img in zip(jpeg, imgs) if img is not None]
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
