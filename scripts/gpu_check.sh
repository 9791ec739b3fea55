#!/usr/bin/env bash
# GPU check for embeddr: run the CUDA-path unit tests, then time scans on the GPU and print a Markdown table.
#
#   bash scripts/gpu_check.sh [FOLDER] [N_IMAGES]
#
# FOLDER: images to scan (default ../shared/data/realimages/images, else generated from scikit-image photos).
# Checks itself: fails when CUDA is not visible to torch, when an encoder does not run on the GPU, or when GPU
# vectors disagree with CPU vectors (cosine < 0.99). Reports which onnxruntime execution provider ran SSCD.
set -euo pipefail
cd "$(dirname "$0")/.."
FOLDER="${1:-../shared/data/realimages/images}"
N="${2:-2000}"

echo "== nvidia-smi"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "(no nvidia-smi)"
python - <<'PY'
import sys, torch, onnxruntime as ort
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
print("onnxruntime", ort.__version__, ort.get_available_providers())
if not torch.cuda.is_available():
    sys.exit("FAIL: torch cannot see a CUDA device")
PY

echo "== CUDA-path unit tests"
python -m pytest -q tests/test_encoders.py -k "device or precision or providers or cuda or open_clip" -p no:cacheprovider

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
