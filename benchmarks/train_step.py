r"""Train-step throughput of each model under the default and paper configs.

  python -m benchmarks.train_step [--steps=20] [--bfloat16]

Times the jitted train step on random batches of the configured input size
(the default: 65 x 96 frames from 3 s excerpts; the paper: 646 x 96), after
a warm-up step, for the straightforward float32 model (`cpu_fast_path`
off) and its variants: `cpu_fast_path` (conv models) and, with --bfloat16,
bfloat16 compute. Each variant prints examples/s and its ratio to the
float32 reference of the same model, measured in the same process in
interleaved rounds (best round kept: absolute times are noisy on shared
CPUs).
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np

from ctxtag import audio
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag.configs import default
from ctxtag.configs import paper

_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per round (the paper"
                              " config's conv models time a quarter).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Interleaved rounds per case.")
_BFLOAT16 = flags.DEFINE_bool("bfloat16", False, "Also time bfloat16.")


def _runner(name, model_config, frames):
  """A callable timing `steps` train steps; returns examples/s."""
  size = model_config.batch_size
  rng = np.random.default_rng(0)
  batch = {
      "mel": rng.normal(size=(size, frames, audio.N_MELS)).astype(np.float32),
      "user_embedding": rng.normal(size=(size, 256)).astype(np.float32),
      "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, size)],
      "mask": np.ones(size, np.float32)}
  if models.BATCH_KINDS[name] == "users":
    del batch["mel"]
  steps = steps_lib.Steps(np.ones(10, np.float32), models.OUTPUTS[name])
  holder = {"state": steps.place(steps_lib.create_train_state(
      models.create_model(name, model_config), model_config,
      jax.random.PRNGKey(0), batch))}
  sharded, key = steps.shard(batch), jax.random.PRNGKey(1)

  def run(count):
    start = time.perf_counter()
    metrics = None
    for _ in range(count):
      holder["state"], metrics = steps.train(holder["state"], sharded, key)
    jax.block_until_ready(metrics)
    return count * size / (time.perf_counter() - start)
  run(1)  # compile
  return run


def _variants(name):
  """{label: config overrides}; the first is the reference."""
  variants = {"float32": {"cpu_fast_path": False}}
  if name != "user":
    variants["float32 cpu_fast_path"] = {"cpu_fast_path": True}
  if _BFLOAT16.value:
    variants["bfloat16"] = {"compute_dtype": "bfloat16",
                            "cpu_fast_path": False}
  return variants


def main(argv):
  del argv
  cases = [("default", default.get_config(), audio.num_frames(3.0)),
           ("paper", paper.get_config(), audio.num_frames(30.0))]
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}"
        f" (jax {jax.__version__})")
  for label, config, frames in cases:
    for name in models.MODELS:
      steps = _STEPS.value
      if label == "paper" and name != "user":
        steps = max(2, steps // 4)
      runners = {}
      for variant, overrides in _variants(name).items():
        model_config = config[name].copy_and_resolve_references()
        model_config.update(overrides)
        runners[variant] = _runner(name, model_config, frames)
      best = {variant: 0.0 for variant in runners}
      for _ in range(_ROUNDS.value):
        for variant, run in runners.items():
          best[variant] = max(best[variant], run(steps))
      for variant, rate in best.items():
        print(f"{label:>8} {name:>10} {variant:<22} ({frames} x 96, batch"
              f" {config[name].batch_size}): {rate:9.1f} ex/s"
              f" ({rate / best['float32']:.2f} x float32)", flush=True)


if __name__ == "__main__":
  app.run(main)
