#!/usr/bin/env bash
# The accelerator checks of the performance work, as one script for a lent
# GPU machine (minutes of device time, one try): each step's log goes to
# $OUT as it runs, so a run cut short still reports what it finished.
#
#   OUT=DIR PAPER_DATA=DIR bash benchmarks/gpu_check.sh
#
# PAPER_DATA is a --data_dir holding a small world rendered at the paper's
# 30 s (build it beforehand: the build is CPU work), e.g.
#   python -m launch.build_dataset --data_dir=DIR --sim=excerpt_seconds=30 \
#     --sim=num_tracks=260 --sim=train_tracks=180 --sim=validation_tracks=40 \
#     --sim=test_tracks=40 --sim=num_users=3000
# In order: the paper step's model-FLOP utilisation (XLA's FLOP count) with
# a jax.profiler trace under $OUT/profile; the paper model's step against PyTorch (float32, bfloat16; batch
# 32, 256); the loop against its step at the paper config (float32,
# bfloat16); two bfloat16 paper epochs of the audio model with timestamps;
# the default reproduction by stage; the loop at the default config.
set -u
out=${OUT:?set OUT}
paper_data=${PAPER_DATA:?set PAPER_DATA}
paper_options=${PAPER_OPTIONS:-excerpt_seconds=30.0,num_tracks=260,num_users=3000,train_tracks=180,validation_tracks=40,test_tracks=40}
stamp() { while IFS= read -r line; do echo "$(date +%T.%N | cut -c1-12) $line"; done; }
step() { echo "== $(date +%T) $1" | tee -a "$out/progress.log"; }
bf16="--config.audio.compute_dtype=bfloat16 --config.audio_user.compute_dtype=bfloat16 --config.user.compute_dtype=bfloat16"
paper_path=$(dirname "$(find "$paper_data" -name dataset_info.json | head -1)")

step device
{ nvidia-smi -L; python3 -c 'import jax; print(jax.__version__, jax.devices())'; nproc; } > "$out/device.txt" 2>&1

step "step utilisation (MFU, profile)"
timeout 240 python3 -m benchmarks.step_utilisation --batch_sizes=256,1024 \
  --precisions=float32,bfloat16 --steps=50 --profile_dir="$out/profile" \
  > "$out/step_utilisation.txt" 2>&1

step versus_pytorch
timeout 300 python3 -m benchmarks.versus_pytorch --batch_sizes=32,256 \
  --precisions=float32,bfloat16 --steps=20 --rounds=2 > "$out/versus_pytorch.txt" 2>&1

for precision in float32 bfloat16; do
  step "train_loop paper $precision"
  flags=""; [ $precision = bfloat16 ] && flags=$bf16
  timeout 90 python3 -m benchmarks.train_loop --config=launch/configs/paper.py \
    --dataset_path="$paper_path" --seconds=2 --rounds=2 $flags \
    > "$out/train_loop_paper_$precision.txt" 2>&1
done

step "paper epochs bfloat16"
timeout 90 python3 -u -m launch.train --workdir=/tmp/paper_run --model=audio \
  --config=launch/configs/paper.py --config.data_dir="$paper_data" \
  --config.dataset_options="$paper_options" --config.audio.max_epochs=2 \
  --config.audio.compute_dtype=bfloat16 2>&1 | stamp > "$out/paper_epochs_bf16.txt"

step "default reproduction by stage"
timeout 200 python3 -m benchmarks.reproduce_stages --workdir=/tmp/default_run \
  > "$out/reproduce_stages.txt" 2>&1

step "train_loop default"
default_path=$(dirname "$(find /tmp/default_run -name dataset_info.json | head -1)")
timeout 60 python3 -m benchmarks.train_loop --dataset_path="$default_path" \
  --seconds=2 --rounds=2 > "$out/train_loop_default.txt" 2>&1
step done
