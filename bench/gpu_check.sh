#!/usr/bin/env bash
# GPU check for a lent CUDA machine (under 8 minutes): the pipeline's CUDA paths and
# benchmarks 1-3 on the GPU. Installs nothing beyond wheels carried in .whl/ (see README,
# "Performance"). Usage: bash bench/gpu_check.sh  [writes to ${OUT:-/tmp/gpu_check}]
set -uo pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee "$OUT/paths.txt"
import time, torch
from models.classifier import build_classifier
from models.sr import build_generator
from pipeline.sr.inference import upscale_tiled
from pipeline.runtime.device import autocast_for
from pipeline.classify.augment import build_augmentation, augment_images
from pipeline.config import load_params
dev = torch.device("cuda")
print("device", torch.cuda.get_device_name(dev), "torch", torch.__version__)
# AMP + channels_last classifier step
m, _ = build_classifier("resnet50", "none"); m = m.to(dev, memory_format=torch.channels_last)
x = torch.rand(64, 1, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
y = torch.randint(0, 2, (64,), device=dev); opt = torch.optim.Adam(m.parameters())
for prec in ("fp32", "bf16"):
    for _ in range(3):
        with autocast_for(dev, prec): loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(10):
        with autocast_for(dev, prec): loss = torch.nn.functional.cross_entropy(m(x).float(), y)
        opt.zero_grad(); loss.backward(); opt.step()
    torch.cuda.synchronize(); print(f"resnet50 224px batch 64 {prec}+channels_last: {640/(time.perf_counter()-t):.0f} img/s")
# Kornia on GPU
aug = build_augmentation(load_params().augment); imgs = torch.rand(4096, 1, 64, 64)
augment_images(imgs[:256], aug, dev); torch.cuda.synchronize(); t = time.perf_counter()
augment_images(imgs, aug, dev); torch.cuda.synchronize()
print(f"kornia augmentation on GPU: {4096/(time.perf_counter()-t):.0f} img/s")
# SR tiled inference with AMP
g = build_generator(4, 64, 23, 32, True).to(dev).eval(); img = torch.rand(1, 1, 1024, 1024)
upscale_tiled(g, img[..., :256, :256], 4, 256, 16, 8, "bf16"); torch.cuda.synchronize()
t = time.perf_counter(); upscale_tiled(g, img, 4, 256, 16, 8, "bf16"); torch.cuda.synchronize()
print(f"RRDBNet 64/23 x4 tiled bf16: {16*1024*1024/1e6/(time.perf_counter()-t):.2f} output MP/s, peak {torch.cuda.max_memory_allocated()/2**30:.2f} GiB")
PY
timeout 200 python3 bench/bench_classifier_throughput.py --device cuda --steps 10 2>&1 | tee "$OUT/bench1.txt"
timeout 120 python3 bench/bench_sr_inference.py --size 512 --tile 128 2>&1 | tee "$OUT/bench2.txt"
timeout 120 python3 bench/bench_augmentation.py --device cuda --images 2048 2>&1 | tee "$OUT/bench3.txt"
