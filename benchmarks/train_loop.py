r"""The training loop's throughput against its own step, per model.

  python -m benchmarks.train_loop --dataset_path=DIR \
      [--config=launch/configs/default.py] [--models=audio,audio_user,user]

For each model, in one process, times (after a warm-up that compiles):
  * step: the jitted train step on one batch already on the device, again
    and again (what the loop could reach if feeding cost nothing);
  * loop: `train.train_epoch` over the training split as training runs it,
    with the feed the config selects (device-resident or host batches), its
    steps per dispatch and its logging fetches;
  * host loop: the same loop forced onto host batches, for comparison.
and prints examples/s and the loop's share of the step's rate.
"""

import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from ctxtag import input_pipeline
from ctxtag import models
from ctxtag import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", "launch/configs/default.py", "Run config.")
_DATASET_PATH = flags.DEFINE_string(
    "dataset_path", None, "Versioned directory of a built dataset.",
    required=True)
_MODELS = flags.DEFINE_list("models", ["audio", "audio_user", "user"],
                            "Models to time.")
_SECONDS = flags.DEFINE_float("seconds", 10.0,
                              "Rough time budget per measurement.")


def _timed(run, steps_per_call, batch_size, calls):
  """examples/s of `calls` calls of `run()`, each `steps_per_call` steps."""
  start = time.perf_counter()
  for _ in range(calls):
    run()
  return calls * steps_per_call * batch_size / (time.perf_counter() - start)


def _calls_for(run, seconds):
  """How many calls of `run` take about `seconds` (after a warm-up call)."""
  run()
  start = time.perf_counter()
  run()
  return max(2, int(seconds / max(time.perf_counter() - start, 1e-6)))


def _measure(name, config, split):
  model_config = config[name]
  kind = models.BATCH_KINDS[name]
  size = model_config.batch_size
  steps, state = train.steps_and_state(name, config, split,
                                       jax.random.PRNGKey(0))
  holder = {"state": steps.place(state)}
  rng = jax.random.PRNGKey(1)
  batch = steps.shard(next(input_pipeline.train_batches(split, kind, size,
                                                        seed=0)))

  def one_step():
    holder["state"], metrics = steps.train(holder["state"], batch, rng)
    jax.block_until_ready(metrics)
  # A step waited for alone understates a pipelined step: time 10 in a row.
  def ten_steps():
    metrics = None
    for _ in range(10):
      holder["state"], metrics = steps.train(holder["state"], batch, rng)
    jax.block_until_ready(metrics)

  one_step()
  calls = _calls_for(ten_steps, _SECONDS.value)
  step_rate = _timed(ten_steps, 10, size, calls)

  per_epoch = input_pipeline.steps_per_epoch(split, kind, size)
  dispatch = train.dispatch_size(name, model_config)
  rates = {}
  for feed_name in ("loop", "host loop"):
    tables = None
    if feed_name == "loop" and train.fits_on_device(
        split, kind, model_config.device_data_budget_mb):
      tables = steps.place_tables(split, kind)
    if tables is None:
      feed = train.HostFeed(steps, split, kind, size, config.seed, 0)
    else:
      feed = train.ResidentFeed(steps, tables, split, kind, size,
                                config.seed, 0)
    count = max(dispatch, (per_epoch // dispatch) * dispatch)

    def epoch(feed=feed, count=count, dispatch=dispatch):
      holder["state"], _ = train.train_epoch(
          feed, holder["state"], rng, int(1e6), count, dispatch,
          config.log_every_steps, lambda *_: None, lambda *_: None)
    calls = _calls_for(epoch, _SECONDS.value)
    label = f"{feed_name} ({'device' if tables else 'host'} data)"
    rates[label] = _timed(epoch, count, size, calls)
  print(f"{name:>10} step {step_rate:9.0f} ex/s (batch {size})", flush=True)
  for label, rate in rates.items():
    print(f"{name:>10} {label:<24} {rate:9.0f} ex/s ="
          f" {100 * rate / step_rate:5.1f}% of step", flush=True)


def main(argv):
  del argv
  config = _CONFIG.value
  split = input_pipeline.load_split(_DATASET_PATH.value, "train")
  print(f"device: {jax.devices()[0].device_kind}, {jax.device_count()}"
        f" device(s); {split.num_tracks} tracks, {split.num_pairs} pairs,"
        f" mel {split.mel_shape}")
  for name in _MODELS.value:
    _measure(name, config, split)


if __name__ == "__main__":
  app.run(main)
