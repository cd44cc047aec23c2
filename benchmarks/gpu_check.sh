#!/usr/bin/env bash
# The prepared GPU check (issues 16 and 27): one GPU node, one table at the end (under 8 minutes
# before the augmented training run was added; not yet timed with it).
#   benchmarks/gpu_check.sh            # from the repository root, after `make test` set up .venv
# SAM ViT-B at 1024 px with random weights as the teacher, a YOLOv8-s student, AMP:
#   - precompute images/s (the teacher on the GPU, parts written to a local store);
#   - the Ray path over the plain loop (same train_step, batches already in memory), and images/s
#     per worker (benchmarks/training_throughput.py --gpu), then the same under the YOLOv8 recipe's
#     augmentation with the SAM maps warped (--augment: the workers' decode tasks augment every
#     epoch, the plain loop replays one epoch's augmented samples);
#   - the data plane's stages with the copy to the GPU, the float decode there and nvJPEG's batched
#     decode (benchmarks/data_plane.py --gpu --no-peer);
#   - peak GPU memory over the whole check (nvidia-smi, sampled every second).
# Nothing here runs in CI; the figures go into docs/performance.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-outputs/gpu_check}
IMAGES=${IMAGES:-256}
rm -rf "$OUT" && mkdir -p "$OUT"
COMMON=(name=gpu-check "data.root=$OUT/data" "store.root=$OUT/store" "train.storage_path=$OUT/runs"
  "data.synthetic.num_images=$IMAGES" data.synthetic.image_size=1024
  teachers.sam.name=sam_vit_b teachers.sam.weights=random teachers.sam.input_size=1024
  store.teacher_batch_size=16 store.rows_per_part=64 student.size=s train.amp=true train.use_gpu=true)

nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -l 1 > "$OUT/gpu_memory.csv" &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT

"$BIN/vfmkd" synth configs/demo.yaml "${COMMON[@]}"
"$BIN/vfmkd" precompute configs/demo.yaml "${COMMON[@]}" 2>&1 | tee "$OUT/precompute.log"
# `|| true`: under `set -e` and pipefail, a log without the line would end the check here.
PRECOMPUTE=$(grep -o '[0-9.]* rows/s' "$OUT/precompute.log" | tail -1 || true)

"$BIN/python" -m benchmarks.training_throughput --gpu --images "$IMAGES" --epochs 3 --repeats 1 \
  --workers 1 --batch-size 16 --batch-sizes 16 --cpus-per-worker 4 \
  --set data.synthetic.image_size=1024 teachers.sam.input_size=1024 student.size=s train.amp=true \
  2>&1 | tee "$OUT/training.log"
"$BIN/python" -m benchmarks.training_throughput --gpu --augment --images "$IMAGES" --epochs 3 --repeats 1 \
  --workers 1 --batch-size 16 --batch-sizes 16 --cpus-per-worker 4 \
  --set data.synthetic.image_size=1024 teachers.sam.input_size=1024 student.size=s train.amp=true \
  2>&1 | tee "$OUT/training_augmented.log" \
  || echo "[gpu_check] the augmented training run failed: $OUT/training_augmented.log" >&2

"$BIN/python" -m benchmarks.data_plane --gpu --no-peer --rows 64 --repeats 2 2>&1 | tee "$OUT/data_plane.log"

kill $SAMPLER 2>/dev/null || true
PEAK=$(sort -n "$OUT/gpu_memory.csv" | tail -1)
echo
echo "| figure | value |"
echo "|---|---|"
echo "| precompute (SAM ViT-B, 1024 px, random weights) | ${PRECOMPUTE:-?} |"
# benchmarks.run_all prints each figure as "[bench] training: <name>: <median> <unit> (<min>-<max>, n=..)".
grep '^\[bench\] training:' "$OUT/training.log" | sed 's/^\[bench\] training: /| /; s/: \([^:]*\)$/ | \1 |/' || true
grep '^\[bench\] training:' "$OUT/training_augmented.log" \
  | sed 's/^\[bench\] training: /| augmented: /; s/: \([^:]*\)$/ | \1 |/' || true
grep '^\[bench\] data plane:' "$OUT/data_plane.log" | grep 'fp16: \|JPEG' \
  | sed 's/^\[bench\] data plane: /| /; s/: \([^:]*\)$/ | \1 |/' || true
echo "| peak GPU memory | ${PEAK:-?} MiB |"
