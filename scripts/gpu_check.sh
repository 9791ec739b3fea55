#!/usr/bin/env bash
# GPU check for embeddr: run the CUDA-path unit tests, then time scans on the GPU and print a Markdown table.
#
#   bash scripts/gpu_check.sh [FOLDER] [N_IMAGES]
#
# FOLDER: images to scan (default ../shared/data/realimages/images, else generated from scikit-image photos).
# Checks itself: fails when CUDA is not visible to torch, when an encoder does not run on the GPU, or when GPU
# vectors disagree with CPU vectors (cosine < 0.99). Reports which onnxruntime execution provider ran SSCD.
# Then: end-to-end images/s on ~1 MP JPEGs with nvJPEG batch decoding + SSCD on the GPU (decode included), and
# the pair search (k-means self-join, default decision) at 1M and 10M realistic vectors on the GPU, with its
# sampled recall. Install the GPU extra first: pip install -e '.[gpu]'.
# Dry run of the new sections on a CPU machine: GPU_CHECK_DEVICE=cpu SEARCH_SIZES=20000 JPEGS=64 bash scripts/gpu_check.sh --search-only
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDER="${1:-../shared/data/realimages/images}"
N="${2:-2000}"

DEVICE="${GPU_CHECK_DEVICE:-cuda}"
SEARCH_SIZES="${SEARCH_SIZES:-1000000 10000000}"
JPEGS="${JPEGS:-2048}"
if [ "${1:-}" = "--search-only" ]; then SEARCH_ONLY=1; else SEARCH_ONLY=0; fi
if [ "$SEARCH_ONLY" = 0 ]; then
echo "== nvidia-smi"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "(no nvidia-smi)"
python - <<'PY'
import sys, torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("onnxruntime", ort.__version__, ort.get_available_providers())
if not torch.cuda.is_available():
    sys.exit("FAIL: torch cannot see a CUDA device")
PY

echo "== CUDA-path unit tests"
python -m pytest -q tests/test_encoders.py tests/test_gpu_path.py tests/test_scan_throughput.py -k "device or precision or providers or cuda or open_clip or jpeg" -p no:cacheprovider

echo "== GPU timings"
python - "$FOLDER" "$N" <<'PY'
import sys, tempfile, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import embeddr
from embeddr.discover import discover
from embeddr.encoders import load_encoder
from embeddr.pipeline import default_workers, iter_decoded
from embeddr.presets import Weights, get_preset

folder, limit = Path(sys.argv[1]), int(sys.argv[2])
tmp = Path(tempfile.mkdtemp(prefix="embeddr-gpu-"))
if not folder.is_dir():  # self-contained fallback: real photos from scikit-image, many renditions
    from PIL import Image
    import skimage.data as sk
    folder = tmp / "photos"
    folder.mkdir()
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry"]
    for name in names:
        img = Image.fromarray(getattr(sk, name)()).convert("RGB")
        for k in range(limit // len(names) + 1):
            s = 256 + 7 * k
            img.resize((s, s * img.height // img.width)).save(folder / f"{name}_{k:04d}.jpg", quality=85 + k % 10)
paths = [c.path for c in discover([folder]) if c.error is None][:limit]
workers = default_workers()
rows, failures = [], []

def cos_check(name, a, b):
    c = float(np.min(np.sum(a * b, axis=1)))
    if c < 0.99:
        failures.append(f"{name}: GPU vs CPU vectors differ (min cosine {c:.4f})")
    return c

# 1. sscd-distilled through onnxruntime (CUDA EP when installed), full scan end to end
enc = load_encoder("sscd-distilled", device="cuda")
ep = enc.providers[0]
t = time.perf_counter()
rep = embeddr.scan(paths, db=tmp / "sscd.db", encoder=enc, workers=workers, batch_size=128)
dt = time.perf_counter() - t
cands = [c for c in discover(paths)][:64]
batch = np.stack([d.pixels for b in iter_decoded(cands, size=224, resize="squash", max_pixels=None, batch_size=64, workers=0) for d in b if d.pixels is not None])
cpu = load_encoder("sscd-distilled", device="cpu")
c1 = cos_check("sscd-distilled", enc.encode(batch), cpu.encode(batch))
if ep != "CUDAExecutionProvider":
    print(f"NOTE: onnxruntime ran SSCD on {ep} (install onnxruntime-gpu for the CUDA EP)")
rows.append(("sscd-distilled, scan end to end", f"onnxruntime {ep}", enc.precision, len(paths), dt, rep.times.encode, c1))

# 2. torch CUDA fp16 path: open_clip ViT-B-32 with random weights (timing only; no download needed)
preset = replace(get_preset("clip-vit-b-32"), weights=Weights(random_init=True))
torch.manual_seed(0)
gpu = load_encoder(preset, device="cuda", precision="fp16")
if not str(gpu.device).startswith("cuda") or gpu.precision != "fp16":
    failures.append(f"open_clip encoder is on {gpu.device} {gpu.precision}, not cuda fp16")
t = time.perf_counter()
rep2 = embeddr.scan(paths, db=tmp / "clip.db", encoder=gpu, workers=workers, batch_size=256)
dt2 = time.perf_counter() - t
cpu32 = load_encoder(preset, device="cpu", precision="fp32")
cpu32.model.load_state_dict({k: v.float().cpu() for k, v in gpu.model.state_dict().items()})
b224 = np.stack([d.pixels for b in iter_decoded(cands[:16], size=224, resize="shortest", max_pixels=None, batch_size=16, workers=0) for d in b if d.pixels is not None])
c2 = cos_check("open_clip fp16", gpu.encode(b224), cpu32.encode(b224))
# encoder alone, warm, big batches
x = np.random.default_rng(0).integers(0, 255, (256, 224, 224, 3), dtype=np.uint8)
gpu.encode(x); torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(8):
    gpu.encode(x)
torch.cuda.synchronize(); enc_rate = 8 * 256 / (time.perf_counter() - t)
rows.append(("ViT-B-32 (random init), scan end to end", "torch CUDA", gpu.precision, len(paths), dt2, rep2.times.encode, c2))

print(f"\nGPU: {torch.cuda.get_device_name(0)}; {len(paths)} files from {folder}; {workers} decode workers\n")
print("| what | runtime | precision | images | seconds | images/s | encode s | min cos vs CPU |")
print("|---|---|---|---:|---:|---:|---:|---:|")
for name, rt, prec, n, s, e, c in rows:
    print(f"| {name} | {rt} | {prec} | {n} | {s:.2f} | {n / s:.1f} | {e:.2f} | {c:.4f} |")
print(f"| ViT-B-32 encoder alone (batch 256, warm) | torch CUDA | fp16 | 2048 | | {enc_rate:.1f} | | |")
if failures:
    sys.exit("FAIL: " + "; ".join(failures))
print("\nOK")
PY
fi

echo "== end to end on ~1 MP JPEGs: embeddr scan (read + SHA-256 in workers, nvJPEG batch decode + resize on the GPU, SSCD on the GPU as shipped (fp32), SQLite, index)"
python - "$DEVICE" "$JPEGS" <<'PY'
import os, sys, tempfile, time
from pathlib import Path

import numpy as np
from PIL import Image
import skimage.data as sk

import embeddr
from embeddr.catalog import Catalog
from embeddr.encoders import load_encoder
from embeddr.pipeline import default_workers

device, n = sys.argv[1], int(sys.argv[2])
tmp = Path(tempfile.mkdtemp(prefix="embeddr-jpeg-"))
names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]
bases = [Image.fromarray(getattr(sk, k)()).convert("RGB") for k in names]
for i in range(n):  # ~1 MP photos, each slightly different (size, crop, quality): n distinct files
    img = bases[i % len(bases)].resize((1200 + i % 7, 850 + i % 5))
    img.crop((i % 13, i % 11, img.width, img.height)).save(tmp / f"{i:05d}.jpg", quality=85 + i % 10)
paths = sorted(str(p) for p in tmp.glob("*.jpg"))
mp = np.mean([Image.open(p).width * Image.open(p).height for p in paths[:20]]) / 1e6
enc = load_encoder("sscd-distilled", device="cuda" if device.startswith("cuda") else "cpu")
embeddr.scan(paths[:256], db=tmp / "warm.db", encoder=enc, batch_size=256)  # warm-up: CUDA context, nvJPEG, cuDNN
rows = []
for jpeg in ("auto" if device.startswith("cuda") else "cpu", "pillow"):
    db = tmp / f"{jpeg}.db"
    t = time.perf_counter()
    rep = embeddr.scan(paths, db=db, encoder=enc, batch_size=256, jpeg_decode=jpeg)
    dt = time.perf_counter() - t
    assert rep.processed == len(paths) and rep.errors == 0, rep.error_samples[:3]
    rows.append((rep, dt, db))
print(f"\n{len(paths)} JPEGs of {mp:.2f} MP; {os.cpu_count()} CPUs; encoder {enc.describe()}\n")
print("| JPEG decoding | encoder (device, precision) | workers | seconds | images/s end to end | batch decode s (main) | encode s (main) | wait for workers s |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for rep, dt, _ in rows:
    print(f"| {rep.jpeg_decode} | {rep.device}, {rep.precision} | {default_workers(rep.device.startswith('cuda'))} | {dt:.2f} | {len(paths) / dt:.1f} | "
          f"{rep.times.batch_decode:.2f} | {rep.times.encode:.2f} | {rep.times.decode_wait:.2f} |")
with Catalog(rows[0][2]) as a, Catalog(rows[1][2]) as b:  # batched-decode vectors against Pillow-decode vectors
    va = {h: np.frombuffer(v, np.float32) for h, v in a.conn.execute("SELECT hash, vec FROM vectors")}
    vb = {h: np.frombuffer(v, np.float32) for h, v in b.conn.execute("SELECT hash, vec FROM vectors")}
cos = np.array([va[h] @ vb[h] for h in va])
print(f"\nbatched vs Pillow decode, same encoder: min cosine {cos.min():.4f}, median {np.median(cos):.4f}")
if device.startswith("cuda") and rows[0][0].jpeg_decode == "pillow":
    sys.exit("FAIL: the scan did not decode JPEGs on the GPU (torchvision missing?)")
if cos.min() < 0.99:
    sys.exit(f"FAIL: batched-decode vectors differ from Pillow-decode vectors (min cosine {cos.min():.4f})")
PY

echo "== pair search on the GPU: default decision (normalised score, collection background), realistic vectors, sampled recall"
python - "$DEVICE" $SEARCH_SIZES <<'PY'
import sys, time

import numpy as np
import torch

from embeddr import search, search_torch
from embeddr.normalize import Scorer
from embeddr.presets import get_preset
from embeddr.synthetic import realistic

device, sizes = sys.argv[1], [int(x) for x in sys.argv[2:]]
preset = get_preset("sscd-distilled")
scorer, threshold = Scorer.for_preset(preset), preset.threshold.value
min_raw, k, eps = scorer.min_raw(threshold), scorer.neighbours, search.EPS
print("| vectors | k-means + assign s | join s | pairs kept | sampled pair recall (1,000 rows, exact on the device) | device |")
print("|---:|---:|---:|---:|---:|---|")


def collection(n: int) -> np.ndarray:
    """n realistic vectors: 1M-vector blocks with their own structure, each under a random rotation (unrelated)."""
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


def neighbours(rows, nn_scores):  # what dupes gives the join: the collection part of the background
    return scorer.backgrounds_of_others(None, nn_scores)


for n in sizes:
    vecs = collection(n)
    t = time.perf_counter()
    nlist = max(1, n // search.LIST_SIZE)
    centroids = search_torch.train_centroids(vecs, nlist, device=device)
    probes = search_torch.assign(vecs, centroids, search.MAX_PROBES, device=device)
    t_layout = time.perf_counter() - t
    t = time.perf_counter()
    res = search_torch.cluster_join(vecs, probes, len(centroids), min_raw, k, neighbours, nprobe=search.NPROBE,
                                    summary=scorer.summary, device=device)
    res.finish()  # every pair's rows get their background
    t_join = time.perf_counter() - t
    keep = scorer.score(res.raw, res.per_row[res.a], res.per_row[res.b]) >= threshold - eps
    V = torch.from_numpy(vecs).to(device)

    def exact(rows):
        """(background, candidate pairs (row, col, raw)) of ``rows``, exactly, on the device."""
        bg, R, C, RAW = np.empty(len(rows), np.float32), [], [], []
        for s0 in range(0, len(rows), 250):  # 250 rows x N scores at a time (10 GB at 10M)
            r = rows[s0 : s0 + 250]
            rt = torch.from_numpy(r).to(device)
            S = V[rt] @ V.T
            S[torch.arange(len(r), device=S.device), rt] = -float("inf")
            bg[s0 : s0 + len(r)] = neighbours(r, torch.topk(S, k, dim=1).values.cpu().numpy())
            i, j = torch.nonzero(S >= min_raw - eps, as_tuple=True)
            R.append(r[i.cpu().numpy()]), C.append(j.cpu().numpy()), RAW.append(S[i, j].cpu().numpy())
            del S
        return bg, np.concatenate(R), np.concatenate(C), np.concatenate(RAW)

    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(n, 1000, replace=False))
    bg_p, r, c, raw = exact(pick)
    others = np.unique(c)
    bg_c = exact(others)[0] if len(others) else np.zeros(0, np.float32)
    bg_r = bg_p[np.searchsorted(pick, r)]
    ok = scorer.score(raw, bg_r, bg_c[np.searchsorted(others, c)]) >= threshold - eps
    a, b = np.minimum(r, c)[ok], np.maximum(r, c)[ok]
    found = np.isin(a * n + b, res.a[keep] * n + res.b[keep])
    recall = found.mean() if len(found) else 1.0
    print(f"| {n:,} | {t_layout:.1f} | {t_join:.1f} | {int(keep.sum()):,} | {recall:.4f} ({len(found)} pairs) | {device} "
          f"{torch.cuda.get_device_name(0) if device.startswith('cuda') else ''} |")
    del V, vecs, res
    torch.cuda.empty_cache() if device.startswith('cuda') else None
PY
