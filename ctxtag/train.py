"""Training one model: what its loop runs (`ctxtag.loop`), on which data,
from which state.

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
time (one `lax.scan`). A larger split is read on the host, batch by batch.
Both feeds give the same batches in the same order.
"""

import functools
import json
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
from ctxtag import fusion_fit
from ctxtag import host_pipeline
from ctxtag import input_pipeline
from ctxtag import loop as loop_lib
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
  summary_path = _summary_path(workdir, name)
  if os.path.exists(summary_path):
    return read_summary(workdir, name)
  if distributed.is_main():  # the only process that writes there
    os.makedirs(model_dir, exist_ok=True)
  _check_batch_sizes(name, config)
  kind = models.BATCH_KINDS[name]
  train = input_pipeline.load_split(dataset_path, "train")
  validation = input_pipeline.load_split(dataset_path, "validation")
  fitted_on = split_fitted_on(name, model_config, train, validation)
  per_epoch = (model_config.steps_per_epoch or input_pipeline.steps_per_epoch(
      fitted_on, kind, model_config.batch_size))
  init_rng, dropout_rng = jax.random.split(
      jax.random.fold_in(jax.random.PRNGKey(config.seed),
                         list(models.OUTPUTS).index(name)))
  steps, state = steps_lib.steps_and_state(name, config, train, init_rng)

  with checkpoints_lib.Checkpoints(
      os.path.join(model_dir, "checkpoints"), cleanup=True,
      model=models.describe(name, config[name])) as checkpoints:
    if frozen_late_fusion(name, model_config):
      summary = _fit_fusion_weights(name, config, steps, state, checkpoints,
                                    validation, workdir, train.mel_shape[0])
    else:
      summary = _train_epochs(name, config, steps, state, checkpoints,
                              (fitted_on, validation), workdir, per_epoch,
                              train.mel_shape[0], dropout_rng)
  summary = {"model": name, **summary}
  if distributed.is_main():
    files.write_text(summary_path, json.dumps(summary, indent=2))
  return summary


def _summary_path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name, "summary.json")


def read_summary(workdir: str, name: str) -> dict:
  """Model `name`'s training summary, as `train_and_evaluate` wrote it."""
  with open(_summary_path(workdir, name)) as f:
    return json.load(f)


def _train_epochs(name: str, config: ml_collections.ConfigDict,
                  steps: steps_lib.Steps, state: steps_lib.TrainState,
                  checkpoints: checkpoints_lib.Checkpoints, splits: tuple,
                  workdir: str, per_epoch: int, frames: int,
                  dropout_rng: jax.Array) -> dict:
  """Model `name`'s epochs of steps on `splits` (fitted on, validation),
  resumed from its latest checkpoint; returns the summary's fields."""
  model_config, kind = config[name], models.BATCH_KINDS[name]
  fitted_on, validation = splits
  model_dir = os.path.join(workdir, name)
  state, loop = _starting_states(name, config, workdir, checkpoints, state,
                                 per_epoch, frames)
  state = steps.place(state)
  step = int(state.step)
  if step == 0 and distributed.is_main():
    # The first dispatch compiles: say so before a slow first line.
    print(f"[{name}] training up to {model_config.max_epochs} epochs of"
          f" {per_epoch} steps; compiling the first steps...",
          file=sys.stderr, flush=True)
  feed, validation_tables = _feed_and_tables(
      name, config, steps, fitted_on, validation, step)
  with progress_lib.Progress(
      name, model_dir, per_epoch * model_config.max_epochs, per_epoch,
      model_config.batch_size, step) as progress:
    runner = loop_lib.EpochRunner(
        feed, dropout_rng, dispatch_size(name, model_config),
        config.log_every_steps, progress=progress, checkpoints=checkpoints,
        checkpoint_clock=loop_lib.CheckpointClock(
            model_config.checkpoint_every_steps,
            model_config.checkpoint_every_seconds, step),
        loop=loop, name=name)
    stopped_early = loop_lib.train_epochs(
        runner, state, step, per_epoch=per_epoch,
        max_epochs=model_config.max_epochs, patience=model_config.patience,
        validate=functools.partial(
            steps_lib.validation_loss, steps, split=validation, kind=kind,
            batch_size=config.eval_batch_size, tables=validation_tables))
  return {"epochs": loop.epoch, "best_epoch": loop.best_epoch,
          "best_step": loop.best_step,
          "best_validation_loss": loop.best_validation_loss,
          "stopped_early": stopped_early, "steps_per_epoch": per_epoch,
          "history": loop.history}


def frozen_late_fusion(name: str,
                       model_config: ml_collections.ConfigDict) -> bool:
  """Whether model `name` is the late fusion with frozen experts: trained
  on the validation split (`split_fitted_on`), by an exact fit of its
  three weights instead of epochs of steps, its loss being convex in them
  (ctxtag.fusion_fit)."""
  module = models.create_model(name, model_config)
  return (isinstance(module, models.LateFusionTagger)
          and module.freeze_experts)


def _fit_fusion_weights(name: str, config: ml_collections.ConfigDict,
                        steps: steps_lib.Steps, state: steps_lib.TrainState,
                        checkpoints: checkpoints_lib.Checkpoints,
                        validation: input_pipeline.Split, workdir: str,
                        frames: int) -> dict:
  """The frozen late fusion's weights by Newton's method on the experts'
  terms over the validation pairs (`split_fitted_on`), saved as the one
  checkpoint (step 1, best and latest); returns the summary's fields.

  Deterministic and seconds long: a fit stopped before its summary is done
  again, its partial saves discarded.
  """
  checkpoints.discard_after(0)
  state = steps.place(transfer.with_trained_parts(state, name, config,
                                                  workdir, frames))
  start_time = time.perf_counter()
  terms = fusion_fit.expert_terms(steps, state, validation,
                                  config.eval_batch_size)
  experts_seconds = time.perf_counter() - start_time
  start = [float(state.params[w]) for w in fusion_fit.WEIGHTS]
  fit = fusion_fit.newton_fit(terms, validation.label_P, steps.weights_C,
                              start)
  state = steps.place(fusion_fit.with_weights(state, fit.weights).replace(
      step=1))
  validation_loss = steps_lib.validation_loss(
      steps, state, validation, models.BATCH_KINDS[name],
      config.eval_batch_size)
  loop_lib.check_finite(name, checkpoints, validation_loss, 1, "validation")
  loop = loop_lib.LoopState()
  loop.end_epoch(1, fit.loss, validation_loss)
  checkpoints.save("best", state, loop)
  checkpoints.save("latest", state, loop)
  if distributed.is_main():
    print(f"[{name}] frozen experts: fitted the fusion's three weights"
          f" exactly (Newton, {fit.iterations} iterations, largest gradient"
          f" {fit.gradient_norm:.1e}, {fit.seconds:.2f} s after the experts'"
          f" pass of {experts_seconds:.1f} s): validation loss"
          f" {validation_loss:.4f}; no epochs, so no early stop",
          file=sys.stderr, flush=True)
  return {"epochs": 1, "best_epoch": 1, "best_step": 1,
          "best_validation_loss": validation_loss, "stopped_early": False,
          "steps_per_epoch": 1, "history": loop.history,
          "fit": {"method": "newton", "weights": dict(zip(
              fusion_fit.WEIGHTS, fit.weights)), "loss": fit.loss,
                  "iterations": fit.iterations,
                  "gradient_norm": fit.gradient_norm,
                  "experts_seconds": experts_seconds,
                  "fit_seconds": fit.seconds}}


def _check_batch_sizes(name: str, config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError unless the batches divide among the devices."""
  for key, size in ((f"{name}.batch_size", config[name].batch_size),
                    ("eval_batch_size", config.eval_batch_size)):
    if size % jax.device_count():
      raise errors.ConfigError(
          f"config {key}={size} is not divisible by the"
          f" {jax.device_count()} devices; use a multiple of"
          f" {jax.device_count()}")


def _starting_states(name: str, config: ml_collections.ConfigDict,
                     workdir: str, checkpoints: checkpoints_lib.Checkpoints,
                     state: steps_lib.TrainState, per_epoch: int, frames: int
                     ) -> tuple[steps_lib.TrainState, loop_lib.LoopState]:
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
    return state, loop_lib.LoopState()
  state, loop = restored
  done = len(loop.epoch_losses)
  print(f"[{name}] resuming at step {int(state.step)}: epoch"
        f" {loop.epoch + 1}, {done} of its {per_epoch} steps done"
        if done else f"[{name}] resuming after epoch {loop.epoch} (step"
        f" {int(state.step)})", flush=True, file=sys.stderr)
  return state, loop


def _feed_and_tables(name: str, config: ml_collections.ConfigDict,
                     steps: steps_lib.Steps, fitted_on: input_pipeline.Split,
                     validation: input_pipeline.Split, step: int):
  """The training feed, on the device if `fitted_on` fits the model's budget,
  and the validation split's device tables (None: it does not fit).

  Args:
    name: the model.
    config: the run config.
    steps: its steps.
    fitted_on: the split its training steps draw (`split_fitted_on`).
    validation: the validation split.
    step: the steps done.

  Returns:
    (a `HostFeed` or `ResidentFeed` positioned at `step`, tables or None).
  """
  model_config, kind = config[name], models.BATCH_KINDS[name]
  budget = model_config.device_data_budget_mb
  fitted_tables = device_data.tables_if_they_fit(name, fitted_on, kind, budget,
                                                 steps.replicated)
  validation_tables = (
      fitted_tables if fitted_on is validation else
      device_data.tables_if_they_fit(name, validation, kind, budget,
                                     steps.replicated))
  if fitted_tables is None:
    feed = HostFeed(steps, fitted_on, kind, model_config.batch_size,
                    config.seed, step,
                    host_pipeline.workers_for(model_config.host_workers),
                    model_config.host_prefetch)
  else:
    feed = ResidentFeed(steps, fitted_tables, fitted_on, kind,
                        model_config.batch_size, config.seed, step,
                        dispatch_size(name, model_config))
  return feed, validation_tables


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
               seed: int, start_step: int, dispatch: int = 1):
    """Args are those of `HostFeed`, and `tables`: the split's, placed
    (`device_data.place_tables`); `dispatch`: the steps per dispatch, to
    which shorter dispatches are padded."""
    self.steps, self.tables, self.dispatch = steps, tables, dispatch
    self.indices = input_pipeline.train_indices(split, kind, batch_size, seed,
                                                start_step)

  def run(self, state: steps_lib.TrainState, rng: jax.Array, count: int):
    """`count` steps; returns the state and their metrics, stacked.

    Fewer steps than the dispatch size (an epoch's last dispatch) are padded
    to it, so that one compiled program runs every dispatch.
    """
    rows = [next(self.indices) for _ in range(count)]
    padded = max(count, self.dispatch)
    local_KxB = np.stack(rows + [rows[-1]] * (padded - count))
    state, metrics_K = self.steps.train_indexed(
        state, self.tables, self.steps.shard_indices(local_KxB), rng, count)
    if padded > count:
      metrics_K = jax.tree.map(lambda value: value[:count], metrics_K)
    return state, [metrics_K]


def dispatch_size(name: str, model_config) -> int:
  """Train steps per dispatch of model `name`: its config's, except 1 for
  conv models on CPU (where a scan of their steps is slower: see
  `steps.train_steps_indexed`)."""
  if models.has_conv_stack(name) and jax.default_backend() == "cpu":
    return 1
  return model_config.steps_per_dispatch


def split_fitted_on(name: str, model_config: ml_collections.ConfigDict,
                    train: input_pipeline.Split,
                    validation: input_pipeline.Split) -> input_pipeline.Split:
  """The split whose examples model `name`'s training steps draw: `train`,
  but `validation` for the late fusion with frozen experts.

  Its weights stack two trained models, so they are fitted on pairs neither
  has seen: on its own training pairs each expert is overconfident, and
  weights fitted there trust it where it knows nothing new
  (docs/training.md). The loss is then convex in the few weights, which
  are fitted exactly (`frozen_late_fusion`): nothing is left for a
  validation loss to select or stop. The test split stays unseen; the
  class weights stay the training split's, as in the validation loss.
  """
  if frozen_late_fusion(name, model_config):
    return validation
  return train
