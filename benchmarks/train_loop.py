r"""The training loop's throughput against its own step, per model.

  python -m benchmarks.train_loop --dataset_path=DIR \
      [--config=launch/configs/default.py] [--models=audio,audio_user,user]

For each model, in one process, times (after a warm-up that compiles):
  * step: the jitted train step on one batch already on the device, again
    and again (what the loop could reach if feeding cost nothing);
  * loop: `loop.train_epoch` over the training split as training runs it,
    with the feed the config selects (device-resident or host batches), its
    steps per dispatch and its logging fetches;
  * host loop: the same loop forced onto host batches, made in this process
    and (--host_workers) by grain worker processes, for comparison.
and prints examples/s and the loop's share of the step's rate. The three are
measured in interleaved rounds and each keeps its best round.
"""

import dataclasses
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from ctxtag import device_data
from ctxtag import host_pipeline
from ctxtag import input_pipeline
from ctxtag import loop as loop_lib
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", "launch/configs/default.py", "Run config.")
_DATASET_PATH = flags.DEFINE_string(
    "dataset_path", None, "Versioned directory of a built dataset.",
    required=True)
_MODELS = flags.DEFINE_list("models", ["audio", "audio_user", "user"],
                            "Models to time.")
_SECONDS = flags.DEFINE_float("seconds", 5.0,
                              "Seconds per measurement and round.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
_HOST_WORKERS = flags.DEFINE_integer(
    "host_workers", -1, "Also time host batches made by this many grain"
    " workers (-1: the config default's rule, 0: no such loop).")


def _rate(run, steps_per_call, batch_size, seconds):
  """examples/s of repeated `run()` calls over about `seconds`."""
  start = time.perf_counter()
  calls = 0
  while time.perf_counter() - start < seconds or calls < 2:
    run()
    calls += 1
  return calls * steps_per_call * batch_size / (time.perf_counter() - start)


def _measure(name, config, split):
  """Prints the step's and the loops' examples/s for model `name`."""
  model_config = config[name]
  kind = models.BATCH_KINDS[name]
  size = model_config.batch_size
  steps, state = steps_lib.steps_and_state(name, config, split,
                                           jax.random.PRNGKey(0))
  holder = {"state": steps.place(state)}
  rng = jax.random.PRNGKey(1)
  batch = steps.shard(next(input_pipeline.train_batches(split, kind, size,
                                                        seed=0)))

  def ten_steps():  # in a row: a step waited for alone understates it
    metrics = None
    for _ in range(10):
      holder["state"], metrics = steps.train(holder["state"], batch, rng)
    jax.block_until_ready(metrics)

  per_epoch = input_pipeline.steps_per_epoch(split, kind, size)
  dispatch = train.dispatch_size(name, model_config)
  count = max(dispatch, (per_epoch // dispatch) * dispatch)
  # The host loop reads records as a split too large for the device would:
  # a copy of the split without the mels that the device tables read.
  host_split = dataclasses.replace(split)
  feeds = {"host loop (host data)": train.HostFeed(
      steps, host_split, kind, size, config.seed, 0)}
  workers = host_pipeline.workers_for(_HOST_WORKERS.value)
  if workers:
    feeds[f"host loop ({workers} grain workers)"] = train.HostFeed(
        steps, dataclasses.replace(split), kind, size, config.seed, 0,
        workers, model_config.host_prefetch)
  if device_data.fits_on_device(split, kind,
                                model_config.device_data_budget_mb):
    feeds[f"loop (device data, {dispatch} steps/call)"] = train.ResidentFeed(
        steps, device_data.place_tables(split, kind, steps.replicated), split,
        kind, size, config.seed, 0, dispatch)

  def epoch_of(feed):
    runner = loop_lib.EpochRunner(feed, rng, dispatch, config.log_every_steps)
    def epoch():
      holder["state"], _ = loop_lib.train_epoch(runner, holder["state"],
                                                int(1e6), int(1e6) + count)
    return epoch

  runs = {"step": (ten_steps, 10)}
  runs.update({label: (epoch_of(feed), count)
               for label, feed in feeds.items()})
  for run, _ in runs.values():
    run()  # compile and warm up
  best = {label: 0.0 for label in runs}
  for _ in range(_ROUNDS.value):
    for label, (run, steps_per_call) in runs.items():
      best[label] = max(best[label], _rate(run, steps_per_call, size,
                                           _SECONDS.value))
  step_rate = best.pop("step")
  print(f"{name:>10} step {step_rate:9.0f} ex/s (batch {size})", flush=True)
  for label, rate in best.items():
    print(f"{name:>10} {label:<36} {rate:9.0f} ex/s ="
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
