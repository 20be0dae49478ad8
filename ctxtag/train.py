"""Training: pure jit-compiled steps, early stopping, orbax checkpoints.

One model trains in `<workdir>/<model>/`:
  checkpoints/latest/  the state after the last finished epoch (resumes here)
  checkpoints/best/    the state with the best validation loss (evaluated)
  tensorboard/         TensorBoard event files (written without TensorFlow)
  metrics.jsonl        one JSON line per logged step and per epoch
  summary.json         written when training ends; a rerun then reuses it

Steps run under `jax.jit` over a 1-D "data" mesh of all devices: batches are
sharded along it, the state is replicated, so the same code runs on one CPU
and on many accelerators.
"""

import functools
import json
import math
import os
import time
from typing import Any

import flax.linen as nn
from flax.training import train_state
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import tensorboardX

from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import models

MODEL_INPUTS = ("mel", "user_embedding", "labels", "mask")


class TrainState(train_state.TrainState):
  batch_stats: Any


def make_optimizer(config: ml_collections.ConfigDict):
  """optax optimiser with a staircase exponential learning-rate decay."""
  schedule = optax.exponential_decay(
      config.learning_rate, transition_steps=config.decay_steps,
      decay_rate=config.decay_rate, staircase=True)
  optimizers = {
      "adam": lambda: optax.adamw(schedule, weight_decay=config.weight_decay),
      "adadelta": lambda: optax.adadelta(schedule),
  }
  if config.optimizer not in optimizers:
    raise ValueError(f"config optimizer must be one of {sorted(optimizers)},"
                     f" got {config.optimizer!r}")
  return optimizers[config.optimizer]()


def class_weights(split: input_pipeline.Split, kind: str) -> np.ndarray:
  """The paper's weights: examples / positives of each context, (10,).

  Tracks count multi-label positives; pairs count their single context.
  """
  if kind == "tracks":
    positives = split.track_labels_NxC.sum(axis=0)
  else:
    positives = np.bincount(split.label_P, minlength=labels.NUM_LABELS)
  if np.any(positives == 0):
    missing = [labels.LABELS[i] for i in np.flatnonzero(positives == 0)]
    raise ValueError(f"training split has no positive for {missing}; class"
                     " weights are undefined")
  size = input_pipeline.num_examples(split, kind)
  return (size / positives).astype(np.float32)


def example_losses(logits_BxC, labels_BxC, weights_C, output: str):
  """Per-example weighted loss.

  multi_label: sigmoid cross-entropy with per-context positive weight (TF's
  weighted_cross_entropy_with_logits), averaged over contexts;
  single_label: softmax cross-entropy weighted by the class of the label.
  """
  if output == "multi_label":
    positive = weights_C * labels_BxC * jax.nn.softplus(-logits_BxC)
    negative = (1 - labels_BxC) * jax.nn.softplus(logits_BxC)
    return (positive + negative).mean(axis=-1)
  cross_entropy = optax.softmax_cross_entropy(logits_BxC, labels_BxC)
  return cross_entropy * (labels_BxC @ weights_C)


def _masked_mean(values_B, mask_B):
  return (values_B * mask_B).sum() / jnp.maximum(mask_B.sum(), 1.0)


def create_train_state(model: nn.Module, config: ml_collections.ConfigDict,
                       rng: jax.Array, example_batch: dict) -> TrainState:
  """Initialises parameters and batch statistics from an example batch."""
  inputs = {k: v[:1] for k, v in example_batch.items() if k in MODEL_INPUTS}
  variables = jax.jit(functools.partial(model.init, train=False))(
      rng, inputs)
  return TrainState.create(
      apply_fn=model.apply, params=variables["params"],
      batch_stats=variables["batch_stats"], tx=make_optimizer(config))


def train_step(state: TrainState, batch: dict, rng: jax.Array, *,
               weights_C: jax.Array, output: str):
  """One optimiser step; returns the new state and its metrics."""
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats}, batch,
        train=True, rngs={"dropout": dropout_rng}, mutable=["batch_stats"])
    losses = example_losses(logits, batch["labels"], weights_C, output)
    return _masked_mean(losses, batch["mask"]), updates

  (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  state = state.apply_gradients(grads=grads,
                                batch_stats=updates["batch_stats"])
  metrics = {"loss": loss, "grad_norm": optax.global_norm(grads),
             "param_norm": optax.global_norm(state.params)}
  return state, metrics


def eval_step(state: TrainState, batch: dict, *, weights_C: jax.Array,
              output: str):
  """Summed loss and example count of a (masked) batch."""
  logits = state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats}, batch,
      train=False)
  losses = example_losses(logits, batch["labels"], weights_C, output)
  return (losses * batch["mask"]).sum(), batch["mask"].sum()


def predict_step(state: TrainState, batch: dict, *, output: str):
  """Sigmoid scores (multi-label) or softmax probabilities (single-label)."""
  logits = state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats}, batch,
      train=False)
  if output == "multi_label":
    return jax.nn.sigmoid(logits)
  return jax.nn.softmax(logits)


class Steps:
  """The model's steps, each jitted once over a 1-D "data" device mesh."""

  def __init__(self, weights_C: np.ndarray, output: str):
    self.mesh = Mesh(np.asarray(jax.devices()), ("data",))
    self.data = NamedSharding(self.mesh, P("data"))
    self.replicated = replicated = NamedSharding(self.mesh, P())
    weights = jax.device_put(weights_C, replicated)
    self.train = jax.jit(
        functools.partial(train_step, weights_C=weights, output=output),
        in_shardings=(replicated, self.data, replicated),
        out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval = jax.jit(
        functools.partial(eval_step, weights_C=weights, output=output),
        in_shardings=(replicated, self.data), out_shardings=replicated)
    self.predict = jax.jit(
        functools.partial(predict_step, output=output),
        in_shardings=(replicated, self.data), out_shardings=self.data)

  def place(self, state: TrainState) -> TrainState:
    """The state replicated over the mesh, as the steps return it; placing
    it up front spares a second compilation on the step after the first."""
    return jax.device_put(state, self.replicated)

  def shard(self, batch: dict) -> dict:
    """This process's share of a batch -> global arrays sharded on "data"."""
    return {
        key: jax.make_array_from_process_local_data(self.data, value)
        for key, value in batch.items() if key in MODEL_INPUTS}


def validation_loss(steps: Steps, state: TrainState,
                    split: input_pipeline.Split, kind: str,
                    batch_size: int) -> float:
  total, count = 0.0, 0.0
  for batch in input_pipeline.eval_batches(split, kind, batch_size):
    loss_sum, batch_count = steps.eval(state, steps.shard(batch))
    total += float(loss_sum)
    count += float(batch_count)
  return total / count


def predict(steps: Steps, state: TrainState, split: input_pipeline.Split,
            kind: str, batch_size: int) -> np.ndarray:
  """Scores of every example of `split` in order, (examples, 10)."""
  rows = []
  for batch in input_pipeline.eval_batches(split, kind, batch_size):
    scores = np.asarray(jax.device_get(steps.predict(state,
                                                     steps.shard(batch))))
    rows.append(scores[batch["mask"] == 1])
  return np.concatenate(rows)


class Checkpoints:
  """The latest and the best state of one model, with the loop's bookkeeping.

  orbax writes each checkpoint to a temporary directory and renames it when
  complete, so a killed save never passes for a checkpoint.
  """

  def __init__(self, directory: str):
    directory = os.path.abspath(directory)  # orbax refuses relative paths
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, enable_async_checkpointing=False)
    self.latest = ocp.CheckpointManager(
        os.path.join(directory, "latest"), options=options)
    self.best = ocp.CheckpointManager(
        os.path.join(directory, "best"), options=options)

  @staticmethod
  def save(manager, state: TrainState, meta: dict) -> None:
    manager.save(int(state.step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
                 force=True)
    manager.wait_until_finished()

  @staticmethod
  def restore(manager, like: TrainState) -> tuple[TrainState, dict] | None:
    """The manager's newest (state, meta), or None if it holds none."""
    step = manager.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        meta=ocp.args.JsonRestore()))
    return restored.state, restored.meta


class Progress:
  """Progress lines with rate and ETA, plus TensorBoard and JSON-lines logs."""

  def __init__(self, name: str, model_dir: str, total_steps: int,
               batch_size: int):
    self.name, self.total_steps, self.batch_size = name, total_steps, batch_size
    self.writer = tensorboardX.SummaryWriter(
        os.path.join(model_dir, "tensorboard"))
    self.log = open(os.path.join(model_dir, "metrics.jsonl"), "a")
    self.start_time, self.start_step = time.time(), None

  def record(self, kind: str, step: int, values: dict) -> None:
    for key, value in values.items():
      self.writer.add_scalar(f"{kind}/{key}", value, step)
    self.log.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
    self.log.flush()

  def step_line(self, step: int, epoch: int, values: dict) -> None:
    if self.start_step is None:
      self.start_step, self.start_time = step, time.time()
      return
    elapsed = time.time() - self.start_time
    rate = (step - self.start_step) / max(elapsed, 1e-9)
    eta = (self.total_steps - step) / max(rate, 1e-9)
    print(f"[{self.name}] epoch {epoch + 1} step {step}/{self.total_steps}"
          f" loss {values['loss']:.4f} {rate * self.batch_size:.0f} ex/s"
          f" ETA<= {eta // 60:.0f}:{eta % 60:02.0f}", flush=True)

  def close(self) -> None:
    self.writer.close()
    self.log.close()


def _fresh_meta() -> dict:
  return {"epoch": 0, "best_validation_loss": math.inf, "best_epoch": -1,
          "best_step": 0, "epochs_without_improvement": 0, "history": []}


def _fetch_checked(name, pending, checkpoint_dir, epoch_losses) -> dict:
  """Fetches queued step metrics and checks every loss.

  Appends the losses to `epoch_losses`; returns the last step's metrics.
  """
  if not pending:
    return {}
  fetched = jax.device_get([metrics for _, metrics in pending])
  for (step, _), metrics in zip(pending, fetched):
    _check_finite(name, float(metrics["loss"]), step, checkpoint_dir)
    epoch_losses.append(float(metrics["loss"]))
  pending.clear()
  return {key: float(value) for key, value in fetched[-1].items()}


def _check_finite(name, loss, step, checkpoint_dir):
  if not math.isfinite(loss):
    raise FloatingPointError(
        f"{name}: non-finite training loss ({loss}) at step {step}; stopped."
        f" The last good checkpoints are kept in {checkpoint_dir}. Lower the"
        " learning rate or check the data.")


def train_and_evaluate(name: str, config: ml_collections.ConfigDict,
                       dataset_path: str, workdir: str) -> dict:
  """Trains model `name` with early stopping; resumes a stopped run.

  Args:
    name: "audio", "audio_user" or "user".
    config: the run config (launch/configs/default.py); `config[name]` is the
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
  os.makedirs(model_dir, exist_ok=True)

  kind = models.BATCH_KINDS[name]
  batch_size = model_config.batch_size
  for key, size in ((f"{name}.batch_size", batch_size),
                    ("eval_batch_size", config.eval_batch_size)):
    if size % jax.device_count():
      raise ValueError(f"config {key}={size} is not divisible by the"
                       f" {jax.device_count()} devices")
  train = input_pipeline.load_split(dataset_path, "train")
  validation = input_pipeline.load_split(dataset_path, "validation")
  per_epoch = (model_config.steps_per_epoch
               or input_pipeline.steps_per_epoch(train, kind, batch_size))
  total_steps = per_epoch * model_config.max_epochs

  init_rng, dropout_rng = jax.random.split(
      jax.random.fold_in(jax.random.PRNGKey(config.seed),
                         list(models.OUTPUTS).index(name)))
  steps, state = _steps_and_state(name, config, train, init_rng)
  checkpoint_dir = os.path.join(model_dir, "checkpoints")
  checkpoints = Checkpoints(checkpoint_dir)
  meta = _fresh_meta()
  restored = Checkpoints.restore(checkpoints.latest, state)
  if restored is not None:
    state, meta = restored
    print(f"[{name}] resuming after epoch {meta['epoch']} (step"
          f" {int(state.step)})", flush=True)
  state = steps.place(state)

  progress = Progress(name, model_dir, total_steps, batch_size)
  batches = input_pipeline.train_batches(train, kind, batch_size, config.seed,
                                         start_step=int(state.step))
  stopped_early = False
  step = int(state.step)
  try:
    for epoch in range(meta["epoch"], model_config.max_epochs):
      if meta["epochs_without_improvement"] >= model_config.patience:
        stopped_early = True
        break
      pending = []  # device metrics, fetched in bulk: a fetch per step
      # stalls the pipeline (measured: ~1.5x slower steps on a 2-core CPU).
      epoch_losses = []
      for _ in range(per_epoch):
        state, metrics = steps.train(state, steps.shard(next(batches)),
                                     dropout_rng)
        step += 1
        pending.append((step, metrics))
        if step % config.log_every_steps == 0 or step == 1:
          values = _fetch_checked(name, pending, checkpoint_dir,
                                  epoch_losses)
          progress.record("train", step, values)
          progress.step_line(step, epoch, values)
      _fetch_checked(name, pending, checkpoint_dir, epoch_losses)
      train_loss = float(np.mean(epoch_losses))
      loss = validation_loss(steps, state, validation, kind,
                             config.eval_batch_size)
      _check_finite(name, loss, step, checkpoint_dir)
      improved = loss < meta["best_validation_loss"]
      meta["epoch"] = epoch + 1
      meta["history"].append({"epoch": epoch + 1, "step": step,
                              "train_loss": train_loss,
                              "validation_loss": loss})
      if improved:
        meta.update(best_validation_loss=loss, best_epoch=epoch + 1,
                    best_step=step, epochs_without_improvement=0)
        Checkpoints.save(checkpoints.best, state, meta)
      else:
        meta["epochs_without_improvement"] += 1
      Checkpoints.save(checkpoints.latest, state, meta)
      progress.record("epoch", step, {"validation_loss": loss,
                                      "train_loss": train_loss})
      print(f"[{name}] epoch {epoch + 1}/{model_config.max_epochs}"
            f" validation loss {loss:.4f}"
            f"{' (best)' if improved else ''}", flush=True)
  finally:
    progress.close()

  summary = {"model": name, "epochs": meta["epoch"],
             "best_epoch": meta["best_epoch"], "best_step": meta["best_step"],
             "best_validation_loss": meta["best_validation_loss"],
             "stopped_early": stopped_early, "steps_per_epoch": per_epoch,
             "history": meta["history"]}
  with open(summary_path, "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def _steps_and_state(name: str, config: ml_collections.ConfigDict,
                     train: input_pipeline.Split,
                     rng: jax.Array) -> tuple[Steps, TrainState]:
  """Model `name`'s jitted steps (class weights from `train`) and a fresh
  state initialised from `rng`."""
  kind = models.BATCH_KINDS[name]
  steps = Steps(class_weights(train, kind), models.OUTPUTS[name])
  model = models.create_model(name, config[name])
  example = next(input_pipeline.eval_batches(train, kind,
                                             config[name].batch_size))
  return steps, create_train_state(model, config[name], rng, example)


def restore_best(name: str, config: ml_collections.ConfigDict,
                 dataset_path: str, workdir: str) -> tuple[Steps, TrainState]:
  """The steps and best-by-validation state of a trained model."""
  train = input_pipeline.load_split(dataset_path, "train")
  steps, like = _steps_and_state(name, config, train, jax.random.PRNGKey(0))
  checkpoint_dir = os.path.join(workdir, name, "checkpoints")
  restored = Checkpoints.restore(Checkpoints(checkpoint_dir).best, like)
  if restored is None:
    raise FileNotFoundError(
        f"{checkpoint_dir}/best: no checkpoint; train model {name!r} first")
  return steps, steps.place(restored[0])
