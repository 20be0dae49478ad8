r"""Model-FLOP utilisation of the paper model's train step, with a profile.

  python -m benchmarks.step_utilisation [--batch_sizes=256,1024] \
      [--precisions=bfloat16,float32] [--steps=50] [--peak_tflops=989] \
      [--profile_dir=DIR]

For the paper's audio model (646 x 96 mels, conv widths 32-256), each case
compiles the jitted train step (ctxtag.steps.train_step, the one training
runs) and reads its FLOPs from XLA's cost analysis of the compiled program
(forward, backward and the optimiser update, per example). It then times
`--steps` steps after a warm-up and prints examples/s, the achieved TFLOP/s
and their share of `--peak_tflops` (default: the device's dense peak of
the precision from the table below, where it is known). With
--profile_dir, the last case's timed steps run under `jax.profiler.trace`
(open the directory in TensorBoard's profile plugin, or xprof), and the
step's compiled HLO goes beside it with the largest ops by XLA's own
per-op cost estimate.

Peaks are the vendors' dense figures (no sparsity), TFLOP/s.
"""

import os
import re
import time

from absl import app
from absl import flags
import jax
import numpy as np

from ctxtag import audio
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag.configs import paper

_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["256"],
                                 "Global batch sizes to time.")
_PRECISIONS = flags.DEFINE_list("precisions", ["bfloat16", "float32"],
                                "compute_dtype values to time.")
_STEPS = flags.DEFINE_integer("steps", 50, "Timed steps per case.")
_FRAMES = flags.DEFINE_integer("frames", 0,
                               "Mel frames (0: the paper's 30 s excerpt).")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0,
                           "The device's peak TFLOP/s for the utilisation"
                           " (0: from the table, where the device is in it).")
_PROFILE_DIR = flags.DEFINE_string("profile_dir", "",
                                   "Where to write a profile of the last"
                                   " case's timed steps.")

# Dense peaks, TFLOP/s, by device kind (as jax names it) and precision.
PEAKS = {
    "NVIDIA H100 80GB HBM3": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA H100 PCIe": {"bfloat16": 756.0, "float32": 51.0},
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA A100-SXM4-80GB": {"bfloat16": 312.0, "float32": 19.5},
    "NVIDIA A100-SXM4-40GB": {"bfloat16": 312.0, "float32": 19.5},
}


def _batch(size: int, frames: int) -> dict:
  rng = np.random.default_rng(0)
  return {
      "mel": rng.normal(size=(size, frames, audio.N_MELS)).astype(np.float32),
      "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, size)],
      "mask": np.ones(size, np.float32)}


def _case(precision: str, size: int, frames: int):
  """(steps, state, sharded batch, key, FLOPs per step, compiled step)."""
  config = paper.get_config().audio
  config.update(batch_size=size, compute_dtype=precision,
                cpu_fast_path=False)
  batch = _batch(size, frames)
  steps = steps_lib.Steps(np.ones(10, np.float32), "multi_label")
  state = steps.place(steps_lib.create_train_state(
      models.create_model("audio", config), config, jax.random.PRNGKey(0),
      batch))
  sharded, key = steps.shard(batch), jax.random.PRNGKey(1)
  compiled = steps.train.lower(state, sharded, key).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):  # older jax: one dict per program
    analysis = analysis[0]
  flops = float((analysis or {}).get("flops", float("nan")))
  return steps, state, sharded, key, flops, compiled


def _time(steps, state, sharded, key, count: int) -> tuple[float, object]:
  state, metrics = steps.train(state, sharded, key)  # warm-up
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(count):
    state, metrics = steps.train(state, sharded, key)
  jax.block_until_ready(metrics)
  return time.perf_counter() - start, state


def _largest_ops(hlo_text: str, count: int = 15) -> list[str]:
  """The compiled module's convolution, dot and fusion instructions with
  the most output elements: a first look at where the step's work is."""
  found = []
  for line in hlo_text.splitlines():
    match = re.search(r"=\s*(\w+)\[([\d,]*)\]\{?[^ ]*\s+(convolution|dot|"
                      r"fusion|custom-call)\(", line)
    if match:
      dims = [int(d) for d in match.group(2).split(",") if d]
      found.append((int(np.prod(dims)) if dims else 1, line.strip()[:200]))
  found.sort(reverse=True)
  return [f"{size:>12,} {line}" for size, line in found[:count]]


def main(argv):
  del argv
  device = jax.devices()[0]
  frames = _FRAMES.value or audio.num_frames(30.0)
  print(f"device: {device.device_kind} x{jax.device_count()}"
        f" ({device.platform}, jax {jax.__version__}); paper audio model,"
        f" {frames} x {audio.N_MELS} mels", flush=True)
  cases = [(p, int(b)) for p in _PRECISIONS.value for b in _BATCH_SIZES.value]
  for index, (precision, size) in enumerate(cases):
    steps, state, sharded, key, flops, compiled = _case(precision, size,
                                                        frames)
    last = index == len(cases) - 1
    if last and _PROFILE_DIR.value:
      os.makedirs(_PROFILE_DIR.value, exist_ok=True)
      with open(os.path.join(_PROFILE_DIR.value, "train_step.hlo.txt"),
                "w") as f:
        f.write(compiled.as_text())
      with open(os.path.join(_PROFILE_DIR.value, "largest_ops.txt"),
                "w") as f:
        f.write("\n".join(_largest_ops(compiled.as_text())) + "\n")
      with jax.profiler.trace(_PROFILE_DIR.value):
        seconds, state = _time(steps, state, sharded, key, _STEPS.value)
    else:
      seconds, state = _time(steps, state, sharded, key, _STEPS.value)
    rate = _STEPS.value * size / seconds
    achieved = flops * _STEPS.value / seconds / 1e12
    peak = _PEAK.value or PEAKS.get(device.device_kind, {}).get(precision)
    share = f"{achieved / peak:.1%} of {peak:g}" if peak else "peak unknown"
    print(f"{precision:>9} batch {size:>5}: {rate:10.1f} ex/s,"
          f" {flops / size / 1e9:.2f} GFLOP/example (XLA),"
          f" {achieved:8.2f} TFLOP/s ({share})", flush=True)


if __name__ == "__main__":
  app.run(main)
