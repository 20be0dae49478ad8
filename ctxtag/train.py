"""Training one model: the epoch loop, its feeds, early stopping, resuming.

One model trains in `<workdir>/<model>/`:
  checkpoints/   its latest and best states (`ctxtag.checkpoints`); the
                 latest is saved at epoch ends and every
                 `checkpoint_every_steps` steps or `checkpoint_every_seconds`
                 within epochs (a stopped run resumes there)
  tensorboard/, metrics.jsonl
                 its records (`ctxtag.progress`)
  summary.json   written when training ends; a rerun then reuses it

A split whose arrays fit `device_data_budget_mb` is kept on every device
(`ctxtag.device_data`) and each step gathers its batch there from a few
indices; the host then sends only indices, `steps_per_dispatch` steps at a
time (one `lax.scan`), and waits for the device only at logging intervals and
epoch ends. A larger split is read on the host, batch by batch. Both feeds
give the same batches in the same order.
"""

from collections.abc import Callable
import dataclasses
import functools
import json
import math
import os
import sys
import time

import jax
import ml_collections
import numpy as np

from ctxtag import checkpoints as checkpoints_lib
from ctxtag import device_data
from ctxtag import distributed
from ctxtag import errors
from ctxtag import files
from ctxtag import host_pipeline
from ctxtag import input_pipeline
from ctxtag import models
from ctxtag import progress as progress_lib
from ctxtag import steps as steps_lib
from ctxtag import transfer


def train_and_evaluate(name: str, config: ml_collections.ConfigDict,
                       dataset_path: str, workdir: str) -> dict:
  """Trains model `name` with early stopping; resumes a stopped run.

  Args:
    name: "audio", "audio_user" or "user".
    config: the run config (ctxtag/configs/default.py); `config[name]` is the
      model's section.
    dataset_path: the versioned directory of a built contextual_tags dataset.
    workdir: the run's directory; the model works in `<workdir>/<name>`.

  Returns:
    The training summary (also in `<workdir>/<name>/summary.json`).
  """
  model_config = config[name]
  model_dir = os.path.join(workdir, name)
  summary_path = os.path.join(model_dir, "summary.json")
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      return json.load(f)
  if distributed.is_main():  # the only process that writes there
    os.makedirs(model_dir, exist_ok=True)
  _check_batch_sizes(name, config)
  kind = models.BATCH_KINDS[name]
  dispatch = dispatch_size(name, model_config)
  train = input_pipeline.load_split(dataset_path, "train")
  validation = input_pipeline.load_split(dataset_path, "validation")
  fitting = fitting_split(name, model_config, train, validation)
  per_epoch = (model_config.steps_per_epoch or input_pipeline.steps_per_epoch(
      fitting, kind, model_config.batch_size))
  init_rng, dropout_rng = jax.random.split(
      jax.random.fold_in(jax.random.PRNGKey(config.seed),
                         list(models.OUTPUTS).index(name)))
  steps, state = steps_lib.steps_and_state(name, config, train, init_rng)

  with checkpoints_lib.Checkpoints(os.path.join(model_dir, "checkpoints"),
                                   cleanup=True) as checkpoints:
    state, loop = _start(name, config, workdir, checkpoints, state,
                         per_epoch, train.mel_shape[0])
    state = steps.place(state)
    step = int(state.step)
    if step == 0 and distributed.is_main():
      # The first dispatch compiles: say so before a slow first line.
      print(f"[{name}] training up to {model_config.max_epochs} epochs of"
            f" {per_epoch} steps; compiling the first steps...",
            file=sys.stderr, flush=True)
    feed, validation_tables = _feed_and_tables(
        name, config, steps, fitting, validation, step)
    with progress_lib.Progress(
        name, model_dir, per_epoch * model_config.max_epochs, per_epoch,
        model_config.batch_size, step) as progress:
      runner = EpochRunner(
          feed, dropout_rng, dispatch, config.log_every_steps,
          log=progress.train_step, show=progress.show_step,
          check=functools.partial(check_finite, name, checkpoints),
          clock=CheckpointClock(
              model_config.checkpoint_every_steps,
              model_config.checkpoint_every_seconds, step,
              lambda state, _, losses: checkpoints.save(
                  "latest", state, loop.within_epoch(losses))))
      stopped_early = False
      while loop.epoch < model_config.max_epochs:
        if loop.epochs_without_improvement >= model_config.patience:
          stopped_early = True
          if distributed.is_main():
            print(f"[{name}] stopped early after epoch {loop.epoch} of"
                  f" {model_config.max_epochs}: no better validation loss"
                  f" for {model_config.patience} epochs; best epoch"
                  f" {loop.best_epoch} (validation loss"
                  f" {loop.best_validation_loss:.4f})",
                  file=sys.stderr, flush=True)
          break
        end = (loop.epoch + 1) * per_epoch
        state, losses = train_epoch(runner, state, step, end,
                                    loop.epoch_losses)
        step = end
        loss = steps_lib.validation_loss(steps, state, validation, kind,
                                         config.eval_batch_size,
                                         validation_tables)
        check_finite(name, checkpoints, loss, step, "validation")
        train_loss = float(np.mean(losses))
        improved = loop.end_epoch(step, train_loss, loss)
        # Every record up to a checkpoint's step is written before it: a
        # resumed run drops the records past its step and writes them again.
        progress.record("epoch", step, {"validation_loss": loss,
                                        "train_loss": train_loss})
        if improved:
          checkpoints.save("best", state, loop)
        checkpoints.save("latest", state, loop)
        runner.clock.restart(step)
        print(f"[{name}] epoch {loop.epoch}/{model_config.max_epochs}"
              f" validation loss {loss:.4f}{' (best)' if improved else ''}",
              flush=True, file=sys.stderr)

  summary = {"model": name, "epochs": loop.epoch,
             "best_epoch": loop.best_epoch, "best_step": loop.best_step,
             "best_validation_loss": loop.best_validation_loss,
             "stopped_early": stopped_early, "steps_per_epoch": per_epoch,
             "history": loop.history}
  if distributed.is_main():
    files.write_text(summary_path, json.dumps(summary, indent=2))
  return summary


def _check_batch_sizes(name: str, config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless the batches divide among the devices."""
  for key, size in ((f"{name}.batch_size", config[name].batch_size),
                    ("eval_batch_size", config.eval_batch_size)):
    if size % jax.device_count():
      raise errors.ConfigError(
          f"config {key}={size} is not divisible by the"
          f" {jax.device_count()} devices; use a multiple of"
          f" {jax.device_count()}")


def _start(name: str, config: ml_collections.ConfigDict, workdir: str,
           checkpoints: checkpoints_lib.Checkpoints,
           state: steps_lib.TrainState, per_epoch: int, frames: int
           ) -> tuple[steps_lib.TrainState, checkpoints_lib.LoopState]:
  """The states training starts from.

  Args:
    name: the model.
    config: the run config.
    workdir: the run's directory (trained parts come from its models).
    checkpoints: the model's checkpoints.
    state: a fresh state.
    per_epoch: the steps of an epoch (for the printed line).
    frames: the mels' frames.

  Returns:
    The latest checkpoint's states, else `state` with the trained parts its
    config asks for and a fresh `LoopState`.
  """
  restored = checkpoints.restore("latest", state, name)
  # What a stopped run saved past the resumed step is redone, and saved
  # again: kept, it would clash with those saves.
  checkpoints.discard_after(0 if restored is None else int(restored[0].step))
  if restored is None:
    state = transfer.with_trained_parts(state, name, config, workdir, frames)
    return state, checkpoints_lib.LoopState()
  state, loop = restored
  done = len(loop.epoch_losses)
  print(f"[{name}] resuming at step {int(state.step)}: epoch"
        f" {loop.epoch + 1}, {done} of its {per_epoch} steps done"
        if done else f"[{name}] resuming after epoch {loop.epoch} (step"
        f" {int(state.step)})", flush=True, file=sys.stderr)
  return state, loop


def _feed_and_tables(name: str, config: ml_collections.ConfigDict,
                     steps: steps_lib.Steps, fitting: input_pipeline.Split,
                     validation: input_pipeline.Split, step: int):
  """The training feed, on the device if `fitting` fits the model's budget,
  and the validation split's device tables (None: it does not fit).

  Args:
    name: the model.
    config: the run config.
    steps: its steps.
    fitting: the split its training steps draw (`fitting_split`).
    validation: the validation split.
    step: the steps done.

  Returns:
    (a `HostFeed` or `ResidentFeed` positioned at `step`, tables or None).
  """
  model_config, kind = config[name], models.BATCH_KINDS[name]
  budget = model_config.device_data_budget_mb
  fitting_tables = device_data.tables_if_they_fit(name, fitting, kind, budget,
                                                  steps.replicated)
  validation_tables = (
      fitting_tables if fitting is validation else
      device_data.tables_if_they_fit(name, validation, kind, budget,
                                     steps.replicated))
  if fitting_tables is None:
    feed = HostFeed(steps, fitting, kind, model_config.batch_size,
                    config.seed, step,
                    host_pipeline.workers_for(model_config.host_workers),
                    model_config.host_prefetch)
  else:
    feed = ResidentFeed(steps, fitting_tables, fitting, kind,
                        model_config.batch_size, config.seed, step)
  return feed, validation_tables


def check_finite(name: str, checkpoints: checkpoints_lib.Checkpoints,
                 loss: float, step: int, what: str = "training") -> None:
  """Raises FloatingPointError, naming the checkpoints kept, unless `loss`
  (the `what` loss at `step`) is finite."""
  if not math.isfinite(loss):
    raise FloatingPointError(
        f"model {name!r}: non-finite {what} loss ({loss}) at step {step};"
        " stopped."
        f" {checkpoints.describe()}. A rerun of the same command stops here"
        " again: lower the learning rate (in a new --workdir) or check the"
        " data.")


@dataclasses.dataclass
class EpochRunner:
  """How `train_epoch` runs steps, and what it calls between dispatches.

  Attributes:
    feed: a `HostFeed` or `ResidentFeed`.
    rng: the dropout key (each step folds in its number).
    steps_per_dispatch: steps per call of the feed.
    log_every: steps between `log` calls (and step 1).
    log: called with (step, metrics) of each logging step.
    check: called with (loss, step) of every step; raises to stop.
    clock: None, or a `CheckpointClock` asked after each dispatch but the
      epoch's last (the epoch's own checkpoint follows that one).
    show: None, or called with (step, metrics) after a dispatch when no line
      was printed for `show_every_seconds` (slow steps: the paper config on
      a CPU logs every 50 steps of ~3 s).
  """
  feed: "HostFeed | ResidentFeed"
  rng: jax.Array
  steps_per_dispatch: int
  log_every: int
  log: Callable[[int, dict], None]
  check: Callable[[float, int], None]
  clock: "CheckpointClock | None" = None
  show: Callable[[int, dict], None] | None = None
  show_every_seconds: float = 30.0


def train_epoch(runner: EpochRunner, state: steps_lib.TrainState, step: int,
                end: int, losses=()) -> tuple[steps_lib.TrainState,
                                              list[float]]:
  """Runs the train steps after `step` through `end`.

  The device runs ahead of the host: metrics stay on the device and are
  fetched together at logging steps and at the end (a fetch per step stalls
  the pipeline: ~1.5x slower steps on a 2-core CPU).

  Args:
    runner: the feed (positioned at `step`) and the calls between
      dispatches.
    state: the state after `step`.
    step: the steps done.
    end: the epoch's last step.
    losses: the losses of the epoch's steps before `step` (a resumed epoch).

  Returns:
    The state after `end` and each of the epoch's step losses.
  """
  pending, losses = [], list(losses)
  last_line = time.monotonic()
  while step < end:
    count = min(runner.steps_per_dispatch, end - step)
    state, metrics = runner.feed.run(state, runner.rng, count)
    pending.extend((step + 1 + i, m) for i, m in enumerate(metrics))
    logged = [s for s in range(step + 1, step + count + 1)
              if s % runner.log_every == 0 or s == 1]
    step += count
    if logged:
      by_step = _fetch(pending, runner.check)
      losses.extend(values["loss"] for values in by_step.values())
      for log_step in logged:
        runner.log(log_step, by_step[log_step])
      last_line = time.monotonic()
    elif (runner.show is not None
          and time.monotonic() - last_line >= runner.show_every_seconds):
      by_step = _fetch(pending, runner.check)
      losses.extend(values["loss"] for values in by_step.values())
      runner.show(step, by_step[step])
      last_line = time.monotonic()
    if runner.clock is not None and step < end and runner.clock.due(step):
      by_step = _fetch(pending, runner.check)
      losses.extend(values["loss"] for values in by_step.values())
      runner.clock.save(state, step, losses)
  by_step = _fetch(pending, runner.check)
  losses.extend(values["loss"] for values in by_step.values())
  return state, losses


def _fetch(pending: list, check) -> dict[int, dict]:
  """Fetches queued step metrics and checks every loss.

  Args:
    pending: (first step, metrics) per dispatch; a metric is a scalar (one
      step) or has a leading axis of the dispatch's steps. Emptied.
    check: called with (loss, step) of every step.

  Returns:
    {step: {metric: value}} of every fetched step, in step order.
  """
  fetched = jax.device_get([metrics for _, metrics in pending])
  by_step = {}
  for (first_step, _), metrics in zip(pending, fetched):
    metrics = {key: np.atleast_1d(value) for key, value in metrics.items()}
    for offset, loss in enumerate(metrics["loss"]):
      check(float(loss), first_step + offset)
      by_step[first_step + offset] = {
          key: float(value[offset]) for key, value in metrics.items()}
  pending.clear()
  return by_step


class HostFeed:
  """Training batches made on the host (by `workers` processes, 0: this
  one) and placed on the devices ahead of use; one step per dispatch."""

  def __init__(self, steps: steps_lib.Steps, split: input_pipeline.Split,
               kind: str, batch_size: int, seed: int, start_step: int,
               workers: int = 0, prefetch: int = 4):
    """Starts making the batches of the steps after `start_step`.

    Args:
      steps: the model's steps.
      split: the split the steps draw from.
      kind: its batch kind.
      batch_size: the global batch.
      seed: fixes the order (`input_pipeline.train_indices`).
      start_step: the steps done.
      workers: batch-making processes (0: this one).
      prefetch: batches made ahead, per worker.
    """
    self.steps = steps
    self.batches = host_pipeline.DevicePrefetch(
        host_pipeline.train_batches(split, kind, batch_size, seed, start_step,
                                    workers, prefetch), steps.shard)

  def run(self, state: steps_lib.TrainState, rng: jax.Array, count: int):
    """`count` steps; returns the state and each step's metrics."""
    metrics = []
    for _ in range(count):
      state, step_metrics = self.steps.train(state, next(self.batches), rng)
      metrics.append(step_metrics)
    return state, metrics


class ResidentFeed:
  """Training batches gathered on the device: the host sends indices only,
  `count` steps' worth per dispatch."""

  def __init__(self, steps: steps_lib.Steps, tables: dict,
               split: input_pipeline.Split, kind: str, batch_size: int,
               seed: int, start_step: int):
    """Args are those of `HostFeed`, and `tables`: the split's, placed
    (`device_data.place_tables`)."""
    self.steps, self.tables = steps, tables
    self.indices = input_pipeline.train_indices(split, kind, batch_size, seed,
                                                start_step)

  def run(self, state: steps_lib.TrainState, rng: jax.Array, count: int):
    """`count` steps; returns the state and their metrics, stacked."""
    local_KxB = np.stack([next(self.indices) for _ in range(count)])
    state, metrics_K = self.steps.train_indexed(
        state, self.tables, self.steps.shard_indices(local_KxB), rng)
    return state, [metrics_K]


def dispatch_size(name: str, model_config) -> int:
  """Train steps per dispatch of model `name`: its config's, except 1 for
  conv models on CPU (see `steps.train_steps_indexed`: 3-4x slower
  there)."""
  if models.has_conv_stack(name) and jax.default_backend() == "cpu":
    return 1
  return model_config.steps_per_dispatch


class CheckpointClock:
  """When to checkpoint within an epoch: at the first dispatch boundary at
  or past each multiple of `every_steps`, and once `every_seconds` have
  passed since the last checkpoint; 0 turns either off.

  Dispatch boundaries keep a resumed run's dispatches those of an
  uninterrupted one, so it computes the same steps the same way.
  """

  def __init__(self, every_steps: int, every_seconds: float, step: int,
               save):
    """`save(state, step, epoch_losses)` writes a checkpoint."""
    self.every_steps, self.every_seconds, self._save = (
        every_steps, every_seconds, save)
    self.restart(step)

  def restart(self, step: int) -> None:
    """Counts from a checkpoint just saved at `step`."""
    self.last_step, self.last_time = step, time.monotonic()

  def due(self, step: int) -> bool:
    """Whether to checkpoint at `step`, a dispatch boundary."""
    if (self.every_steps
        and step // self.every_steps > self.last_step // self.every_steps):
      return True
    return bool(self.every_seconds) and (
        time.monotonic() - self.last_time >= self.every_seconds)

  def save(self, state: steps_lib.TrainState, step: int,
           epoch_losses: list) -> None:
    """Checkpoints `state`, after `step` and `epoch_losses`, and restarts."""
    self._save(state, step, epoch_losses)
    self.restart(step)


def fitting_split(name: str, model_config: ml_collections.ConfigDict,
                  train: input_pipeline.Split,
                  validation: input_pipeline.Split) -> input_pipeline.Split:
  """The split whose examples model `name`'s training steps draw: `train`,
  but `validation` for the late fusion with frozen experts.

  Its three weights are a stacking step over two trained models, fitted on
  pairs neither has seen: on their own training pairs each expert is
  overconfident (the user-only model knows its training users, the audio
  model its training tracks), and weights fitted there trust each expert
  where it knows nothing new (measured: a user weight of 1.28 where users
  say nothing, an audio weight above 0 where the track says nothing). The
  validation split is fitted in full passes, and its loss still picks the
  best state and stops early: with frozen experts the loss is convex in the
  three weights, so this only selects the best iterate of a three-parameter
  fit, which 4,500 pairs pin down (a held-out half for stopping would halve
  the fit's pairs for no guard it needs). The test split stays unseen; the
  class weights stay the training split's, as in the validation loss.
  """
  if model_config.fusion == "late" and model_config.freeze_experts:
    return validation
  return train
