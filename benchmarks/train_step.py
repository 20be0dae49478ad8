r"""Train-step throughput of each model under the default and paper configs.

  python -m benchmarks.train_step [--steps=20]

Times the jitted train step on random batches of the configured input size
(the default: 65 x 96 frames from 3 s excerpts; the paper: 646 x 96), after
a warm-up step, and prints examples/s with the ratio to the default audio
model measured in the same process (absolute times are noisy on shared CPUs).
"""

import time

from absl import app
from absl import flags
import jax
import numpy as np

from ctxtag import audio
from ctxtag import models
from ctxtag import train
from launch.configs import default
from launch.configs import paper

_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per case.")


def _throughput(name, config, frames, steps):
  model_config = config[name]
  size = model_config.batch_size
  rng = np.random.default_rng(0)
  batch = {
      "mel": rng.normal(size=(size, frames, audio.N_MELS)).astype(np.float32),
      "user_embedding": rng.normal(size=(size, 256)).astype(np.float32),
      "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, size)],
      "mask": np.ones(size, np.float32)}
  runner = train.Steps(np.ones(10, np.float32), models.OUTPUTS[name])
  state = runner.place(train.create_train_state(
      models.create_model(name, model_config), model_config,
      jax.random.PRNGKey(0), batch))
  sharded, rng = runner.shard(batch), jax.random.PRNGKey(1)
  state, metrics = runner.train(state, sharded, rng)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = runner.train(state, sharded, rng)
  jax.block_until_ready(metrics)
  return steps * size / (time.perf_counter() - start)


def main(argv):
  del argv
  frames_default = audio.num_frames(3.0)
  frames_paper = audio.num_frames(30.0)
  cases = [("default", default.get_config(), frames_default),
           ("paper", paper.get_config(), frames_paper)]
  baseline = None
  print(f"device: {jax.devices()[0].device_kind}, {jax.device_count()}"
        " device(s)")
  for label, config, frames in cases:
    for name in models.OUTPUTS:
      steps = _STEPS.value if label == "default" else max(
          2, _STEPS.value // 4)
      rate = _throughput(name, config, frames, steps)
      baseline = baseline or rate
      print(f"{label:>8} {name:>10} ({frames} x 96, batch"
            f" {config[name].batch_size}): {rate:9.1f} examples/s"
            f" ({rate / baseline:.3f} x default audio)", flush=True)


if __name__ == "__main__":
  app.run(main)
