#!/usr/bin/env bash
# The GPU profile end to end on real crops, with the GPU's utilisation sampled, plus the
# bare-loop comparisons; writes OUT/table.md. Under 8 minutes on one H100/H200.
#
#   bash bench/gpu_profile.sh CROPS_DIR [OUT_DIR]     (from the repository root)
#
# CROPS_DIR: raw crops in the pipeline's layout (<class>/<sample>_crops_r/<crop>.tif);
# the profile takes NIH3T3 as the positive class of ../shared/data/nuclei, change
# POSITIVE for other data. Installs nothing from the network: the non-torch packages
# come from wheels in .whl/ (bash ../shared/tools/offline-gpu-wheels.sh .whl builds
# them). GPU=<index> picks the GPU (default 0); GPU_PROFILE_DRY=1 runs the same plumbing
# at a toy size (CPU is fine).
set -uo pipefail
CROPS=$(realpath "$1")
OUT=$(realpath -m "${2:-/tmp/gpu_profile}")
POSITIVE=${POSITIVE:-NIH3T3}
GPU=${GPU:-0}
export CUDA_VISIBLE_DEVICES=$GPU  # one GPU: utilisation is sampled on that one only
REPO=$PWD
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$REPO PATH=/tmp/site/bin:$PATH
fi
if ! command -v python >/dev/null; then  # dvc.yaml's commands call `python`
    mkdir -p /tmp/pybin && ln -sf "$(command -v python3)" /tmp/pybin/python
    export PATH=/tmp/pybin:$PATH
fi

# A scratch project from the tracked files: the profile never touches this checkout.
PROJECT=$OUT/project
rm -rf "$PROJECT" && mkdir -p "$PROJECT"
git ls-files -z | xargs -0 cp --parents -t "$PROJECT"
cd "$PROJECT"
export PYTHONPATH=$PROJECT${PYTHONPATH:+:$PYTHONPATH}
rm -rf reports  # the committed demo's reports: only this run's may appear in the table
git init -q && git add -A
git -c user.name=gpu-profile -c user.email=gpu-profile@example.invalid commit -qm profile

# The gpu profile (pipeline/conf/profile/gpu.yaml) cut to a few minutes: its SR lengths are
# a full run's, and the classifiers read 224 px here instead of the full 512 px SR images.
PROFILE="-S profile=gpu -S sr.iters_psnr=800 -S sr.iters_gan=400 -S sr.val_every=200
         -S sr.checkpoint_every=400 -S classifier.image_size=224 -S batch_size=64"
DATA="-S data.raw_dir=$CROPS -S data.positive=$POSITIVE"
LOOP_ARGS="--device auto --size 224 --batch 64 --steps 30 --precision bf16"
SR_ARGS="--device auto --feat 64 --blocks 23 --grow 32 --batch 16 --patch 128 --iters 30 --precision bf16"
if [ "${GPU_PROFILE_DRY:-0}" = 1 ]; then  # same commands, toy sizes
    # the crops keep their size on disk; ingest resizes them to the toy 32 px
    DATA="$DATA -S data.crop_size=32 -S data.on_size_mismatch=resize
          -S sr.num_feat=8 -S sr.num_block=1 -S sr.num_grow_ch=8 -S sr.hr_patch=32
          -S sr.discriminator=unet -S sr.iters_psnr=4 -S sr.iters_gan=2
          -S sr.val_every=2 -S sr.checkpoint_every=2 -S sr.precision=fp32
          -S classifier.image_size=32 -S classifier.precision=fp32 -S epochs=1
          -S sr.patches_per_crop=1 -S sr.disc_feat=8 -S sr.batch_size=2 -S batch_size=8
          -S classifier.backbones=[mobilenet_v3_large]"
    LOOP_ARGS="--device auto --size 32 --batch 8 --steps 2 --precision fp32 --backbones mobilenet_v3_large"
    SR_ARGS="--device auto --feat 8 --blocks 1 --grow 8 --batch 2 --patch 32 --iters 3"
fi

SAMPLER=""
if command -v nvidia-smi >/dev/null; then
    nvidia-smi -i "$GPU" --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        > "$OUT/gpu.txt"
    nvidia-smi -i "$GPU" --query-gpu=timestamp,utilization.gpu,memory.used \
        --format=csv,noheader,nounits -lms 500 > "$OUT/util.csv" &
    SAMPLER=$!
else
    : > "$OUT/util.csv"
fi

# shellcheck disable=SC2086  # PROFILE and DATA are lists of -S arguments
timeout 330 python -m pipeline.tools.run_demo --timeline "$OUT/timeline.csv" -- exp run $PROFILE $DATA \
    2>&1 | tee "$OUT/repro.log" | grep -v "━"
DAG_STATUS=${PIPESTATUS[0]}  # a failed stage must show in the table, not only in repro.log
echo "$DAG_STATUS" > "$OUT/dag_exit_status"
# shellcheck disable=SC2086
timeout 90 python bench/bench_training_loop.py $LOOP_ARGS 2>&1 | grep -v "━" | tee "$OUT/loop.txt"
# shellcheck disable=SC2086
timeout 60 python bench/bench_sr_training.py $SR_ARGS 2>&1 | grep -v "━" | tee "$OUT/sr.txt"
[ -n "$SAMPLER" ] && kill "$SAMPLER"
for stage in reports/train/*/metrics.json reports/sr/metrics.json; do
    [ -f "$stage" ] && echo "$stage: $(cat "$stage")"
done > "$OUT/stage_metrics.txt"
python "$REPO/bench/gpu_profile_table.py" "$OUT"
exit "$DAG_STATUS"
