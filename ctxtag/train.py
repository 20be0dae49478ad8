"""Training: pure jit-compiled steps, early stopping, orbax checkpoints.

One model trains in `<workdir>/<model>/`:
  checkpoints/latest/  the two newest states, saved at epoch ends and every
                       `checkpoint_every_steps` steps or
                       `checkpoint_every_seconds` within epochs (resumes here)
  checkpoints/best/    the two states with the best validation losses
                       (the newest is evaluated)
  tensorboard/         TensorBoard event files (written without TensorFlow)
  metrics.jsonl        one JSON line per logged step and per epoch
  summary.json         written when training ends; a rerun then reuses it

Steps run under `jax.jit` over a 1-D "data" mesh of all devices: batches are
sharded along it, the state is replicated, so the same code runs on one CPU
and on many accelerators.

A split whose arrays fit `device_data_budget_mb` is kept on every device
(replicated) and each step gathers its batch there from a few indices; the
host then sends only indices, `steps_per_dispatch` steps at a time (one
`lax.scan`), and waits for the device only at logging intervals and epoch
ends. A larger split is read on the host, batch by batch. Both feeds give the
same batches in the same order.
"""

import contextlib
import copy
import errno
import functools
import gc
import json
import logging
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

from ctxtag import audio
from ctxtag import distributed
from ctxtag import errors
from ctxtag import files
from ctxtag import host_pipeline
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
    raise errors.ConfigError(
        f"config optimizer={config.optimizer!r} (of a model section): expected"
        f" one of {sorted(optimizers)}")
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
    raise errors.DatasetError(
        f"training split has no positive for {missing}; class weights are"
        " undefined: the dataset needs training examples of every context")
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


def train_steps_indexed(state: TrainState, tables: dict,
                        indices_KxB: jax.Array, rng: jax.Array, *, kind: str,
                        weights_C: jax.Array, output: str):
  """K optimiser steps on batches gathered from device-resident tables.

  One `lax.scan` over the steps: a single dispatch for K steps, and the
  metrics of each step stacked along a leading K axis. K = 1 runs without a
  loop: XLA:CPU gives convolutions inside a loop body none of its fast
  kernels (its convolution canonicalisation only visits the entry
  computation; measured 3-4x slower steps), so conv models on CPU run one
  step per dispatch.
  """
  def one_step(state, indices_B):
    batch = _barrier(dict(input_pipeline.gather_batch(tables, indices_B, kind),
                          mask=jnp.ones(indices_B.shape, jnp.float32)))
    return train_step(state, batch, rng, weights_C=weights_C, output=output)

  if indices_KxB.shape[0] == 1:
    state, metrics = one_step(state, indices_KxB[0])
    return state, jax.tree.map(lambda value: value[None], metrics)
  return jax.lax.scan(one_step, state, indices_KxB)


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


def track_features_step(state: TrainState, batch: dict):
  """The audio + user model's conv stack output for a batch of tracks."""
  return state.apply_fn(
      {"params": state.params, "batch_stats": state.batch_stats},
      _barrier(batch), train=False, features_only=True)


def _barrier(batch: dict) -> dict:
  """The gathered batch, materialised before the model reads it.

  Left to itself XLA fuses the gather into the model's first ops, which
  changes their rounding; with the batch materialised, a step computes
  exactly what it computes on a host batch (one small copy).
  """
  return jax.lax.optimization_barrier(batch)


def _gathered(step_fn, kind: str):
  """`step_fn(state, batch)` on a batch gathered by index from tables."""
  def indexed(state, tables, indices_B, mask_B):
    batch = _barrier(dict(input_pipeline.gather_batch(tables, indices_B, kind),
                          mask=mask_B))
    return step_fn(state, batch)
  return indexed


class Steps:
  """The model's steps, each jitted once over a 1-D "data" device mesh.

  `train`, `eval` and `predict` take host batches; with a batch `kind`,
  `train_indexed`, `eval_indexed` and `predict_indexed` take device-resident
  tables (`place_tables`) and example indices instead.
  """

  def __init__(self, weights_C: np.ndarray, output: str,
               kind: str | None = None):
    # Grouped by process: each process's devices then hold the contiguous
    # share of every batch that the input pipeline gives that process.
    self.mesh = Mesh(np.asarray(sorted(
        jax.devices(), key=lambda d: (d.process_index, d.id))), ("data",))
    self.data = NamedSharding(self.mesh, P("data"))
    # Indices of K steps: each step's batch is sharded like a host batch.
    self.data_steps = NamedSharding(self.mesh, P(None, "data"))
    self.replicated = replicated = NamedSharding(self.mesh, P())
    weights = jax.device_put(weights_C, replicated)
    train_fn = functools.partial(train_step, weights_C=weights, output=output)
    eval_fn = functools.partial(eval_step, weights_C=weights, output=output)
    predict_fn = functools.partial(predict_step, output=output)
    self.train = jax.jit(
        train_fn, in_shardings=(replicated, self.data, replicated),
        out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval = jax.jit(eval_fn, in_shardings=(replicated, self.data),
                        out_shardings=replicated)
    self.predict = jax.jit(predict_fn, in_shardings=(replicated, self.data),
                           out_shardings=self.data)
    self.track_features = jax.jit(
        track_features_step, in_shardings=(replicated, self.data),
        out_shardings=replicated)
    self.first_rows = jax.jit(
        lambda parts, count: jnp.concatenate(parts)[:count],
        static_argnums=1, out_shardings=replicated)
    if kind is None:
      return
    self.train_indexed = jax.jit(
        functools.partial(train_steps_indexed, kind=kind, weights_C=weights,
                          output=output),
        in_shardings=(replicated, replicated, self.data_steps, replicated),
        out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval_indexed = jax.jit(
        _gathered(eval_fn, kind),
        in_shardings=(replicated, replicated, self.data, self.data),
        out_shardings=replicated)
    self.predict_indexed = jax.jit(
        _gathered(predict_fn, kind),
        in_shardings=(replicated, replicated, self.data, self.data),
        out_shardings=self.data)
    self.track_features_indexed = jax.jit(
        lambda state, mel_NxTxF, tracks_B: track_features_step(
            state, {"mel": mel_NxTxF[tracks_B].astype(jnp.float32)}),
        in_shardings=(replicated, replicated, self.data),
        out_shardings=replicated)

  def place(self, state: TrainState) -> TrainState:
    """The state replicated over the mesh, as the steps return it; placing
    it up front spares a second compilation on the step after the first."""
    return jax.device_put(state, self.replicated)

  def shard(self, batch: dict) -> dict:
    """This process's share of a batch -> global arrays sharded on "data"."""
    return {
        key: jax.make_array_from_process_local_data(self.data, value)
        for key, value in batch.items() if key in MODEL_INPUTS}

  def shard_indices(self, local: np.ndarray) -> jax.Array:
    """This process's share of indices, (B,) or (K, B) -> a global array."""
    sharding = self.data if local.ndim == 1 else self.data_steps
    return jax.make_array_from_process_local_data(sharding, local)

  def place_array(self, host: np.ndarray) -> jax.Array:
    """`host` replicated on every device, built from a callback so that each
    process fills only its own devices (every process holds the same)."""
    return jax.make_array_from_callback(
        host.shape, self.replicated, lambda index: host[index])

  def place_tables(self, split: input_pipeline.Split, kind: str) -> dict:
    """`kind`'s resident tables of `split`, replicated on every device."""
    return {field: self.place_array(input_pipeline.resident_array(split, field))
            for field in input_pipeline.resident_fields(kind)}


def fits_on_device(split: input_pipeline.Split, kind: str,
                   budget_mb: float) -> bool:
  """Whether `kind`'s resident tables of `split` fit `budget_mb` per device."""
  return input_pipeline.resident_bytes(split, kind) <= budget_mb * 2**20


def _pair_evaluation_tables(steps: Steps, state: TrainState,
                            split: input_pipeline.Split, batch_size: int,
                            tables: dict | None) -> dict:
  """Device tables to evaluate the audio + user model on `split`.

  A track's audio features are the same for each of its pairs (about 7 in
  the paper's data), so they are computed once per track, from resident
  mels or from host batches of tracks, and the pairs gather them.
  """
  features = []
  if tables is None:
    for batch in input_pipeline.eval_batches(split, "tracks", batch_size):
      features.append(steps.track_features(
          state, steps.shard({"mel": batch["mel"]})))
    tables = {field: steps.place_array(
        input_pipeline.resident_array(split, field))
              for field in ("pair_track_P", "user_embedding_PxE",
                            "pair_labels_PxC")}
  else:
    for indices, _ in input_pipeline.eval_indices(split, "tracks",
                                                  batch_size):
      features.append(steps.track_features_indexed(
          state, tables["mel_NxTxF"], steps.shard_indices(indices)))
  return {"audio_features_NxD": steps.first_rows(features, split.num_tracks),
          **{k: v for k, v in tables.items() if k != "mel_NxTxF"}}


def validation_loss(steps: Steps, state: TrainState,
                    split: input_pipeline.Split, kind: str, batch_size: int,
                    tables: dict | None = None) -> float:
  """Mean loss over every example of `split`.

  Args:
    steps: the model's steps.
    state: the model state.
    split: the split to evaluate.
    kind: its batch kind.
    batch_size: the global evaluation batch.
    tables: `steps.place_tables(split, kind)`, or None to read host batches.
  """
  if kind == "pairs":
    tables = _pair_evaluation_tables(steps, state, split, batch_size, tables)
  sums = []  # device scalars, fetched together: one wait, not one a batch
  if tables is None:
    for batch in input_pipeline.eval_batches(split, kind, batch_size):
      sums.append(steps.eval(state, steps.shard(batch)))
  else:
    for indices, mask in input_pipeline.eval_indices(split, kind, batch_size):
      sums.append(steps.eval_indexed(state, tables,
                                     steps.shard_indices(indices),
                                     steps.shard_indices(mask)))
  total, count = 0.0, 0.0
  for loss_sum, batch_count in jax.device_get(sums):
    total += float(loss_sum)
    count += float(batch_count)
  return total / count


def predict(steps: Steps, state: TrainState, split: input_pipeline.Split,
            kind: str, batch_size: int,
            tables: dict | None = None) -> np.ndarray:
  """Scores of every example of `split` in order, (examples, 10), on every
  process.

  Args are those of `validation_loss`.
  """
  if kind == "pairs":
    tables = _pair_evaluation_tables(steps, state, split, batch_size, tables)
  scores = []
  if tables is None:
    for batch in input_pipeline.eval_batches(split, kind, batch_size):
      scores.append(steps.predict(state, steps.shard(batch)))
  else:
    for indices, mask in input_pipeline.eval_indices(split, kind, batch_size):
      scores.append(steps.predict_indexed(state, tables,
                                          steps.shard_indices(indices),
                                          steps.shard_indices(mask)))
  # The batches' global rows are the examples in order, then the last
  # batch's padding; the first rows, replicated, reach every process (a
  # sharded batch spans other processes' devices, which no process reads).
  return np.asarray(jax.device_get(steps.first_rows(
      scores, input_pipeline.num_examples(split, kind))))


class Checkpoints:
  """The latest and the best states of one model, with the loop's bookkeeping.

  orbax writes each checkpoint to a temporary directory and renames it when
  complete, so a killed save never passes for a checkpoint. Saves copy the
  state off the device and write it in the background while training goes
  on (a save took ~0.15 s of a 2-core CPU's time per epoch, more than a
  whole epoch of the user-only model); `close` waits for them.

  Each manager keeps its two newest checkpoints: when the newest cannot be
  restored (a file truncated or lost), `restore` says so in one line and
  falls back to the one before.
  """

  KEEP = 2

  def __init__(self, directory: str, cleanup: bool = False):
    """Opens `directory`'s managers; with `cleanup` (the training run that
    owns them), the temporary directories of killed saves are removed."""
    self.directory = directory = os.path.abspath(directory)  # orbax: absolute
    model = os.path.basename(os.path.dirname(directory))

    def manager(which):
      # With several processes, orbax names its barriers by step: saves of
      # both managers at one step would share them without a prefix.
      options = ocp.CheckpointManagerOptions(
          max_to_keep=self.KEEP, create=True, enable_async_checkpointing=True,
          cleanup_tmp_directories=cleanup,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=f"{model}_{which}"))
      return ocp.CheckpointManager(os.path.join(directory, which),
                                   options=options)

    self.latest = manager("latest")
    self.best = manager("best")

  @staticmethod
  def save(manager, state: TrainState, meta: dict) -> None:
    """Saves (state, meta) as step `state.step` of `manager`, in the
    background; a step already there (left by a run stopped after saving
    it) is replaced, never a reason to stop."""
    step = int(state.step)
    with _disk_full_named(manager.directory, None):
      manager.wait_until_finished()  # an earlier save's error comes here
    with _disk_full_named(manager.directory, step):
      if step in manager.all_steps():
        manager.delete(step)
      manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          meta=ocp.args.JsonSave(copy.deepcopy(meta))), force=True)

  def wait(self) -> None:
    """Waits for pending saves of both managers."""
    for manager in (self.latest, self.best):
      with _disk_full_named(manager.directory, None):
        manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and closes both managers (both, even when
    the first fails)."""
    try:
      with _disk_full_named(self.latest.directory, None):
        self.latest.close()
    finally:
      with _disk_full_named(self.best.directory, None):
        self.best.close()

  def discard_after(self, step: int) -> None:
    """Deletes the checkpoints of both managers past `step`: ones a stopped
    run saved beyond the checkpoint it resumes from (the run saves them
    again, equal), and damaged ones."""
    for manager in (self.latest, self.best):
      for later in manager.all_steps():
        if later > step:
          manager.delete(later)

  def describe(self) -> str:
    """What both managers hold, as a sentence: "Checkpoints kept: latest
    at steps 200 and 300 (DIR/latest), best at step 200 (DIR/best)"."""
    self.wait()
    held = []
    for label, manager in (("latest", self.latest), ("best", self.best)):
      manager.reload()
      steps = [str(step) for step in sorted(manager.all_steps())]
      if steps:
        held.append(f"{label} at step{'s' if len(steps) > 1 else ''}"
                    f" {' and '.join(steps)} ({manager.directory})")
    if not held:
      return f"No checkpoint has been saved yet in {self.directory}"
    return "Checkpoints kept: " + ", ".join(held)

  @staticmethod
  def restore(manager, like: TrainState,
              label: str = "") -> tuple[TrainState, dict] | None:
    """The manager's newest (state, meta) that can be restored, or None.

    A checkpoint that cannot be restored is named in one printed line and
    the one before it is tried.

    Args:
      manager: `latest` or `best`.
      like: a state (or its shapes) of the checkpoint's structure.
      label: the model's name, for the printed line.
    """
    steps = sorted(manager.all_steps(), reverse=True)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    for index, step in enumerate(steps):
      try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract),
            meta=ocp.args.JsonRestore()))
        meta = dict(restored.meta)
      except Exception as error:  # pylint: disable=broad-exception-caught
        # orbax, tensorstore and json raise many kinds for damaged files.
        reason = (str(error).strip().splitlines() or [""])[0][:160]
        reason = f"{type(error).__name__}: {reason}"
      else:
        meta.setdefault("epoch_losses", [])  # checkpoints saved before them
        return restored.state, meta
      _forget_failed_reads()
      later = (f"falling back to step {steps[index + 1]}"
               if index + 1 < len(steps) else "no earlier checkpoint left")
      print(f"[{label}] checkpoint {manager.directory}/{step} cannot be"
            f" restored ({reason}); {later}", flush=True)
    return None


def _forget_failed_reads() -> None:
  """Collects the failed reads of a damaged checkpoint quietly: orbax
  leaves them as futures whose errors asyncio logs when they are collected,
  dozens of lines each, where one line says it all."""
  logger = logging.getLogger("asyncio")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    gc.collect()
  finally:
    logger.setLevel(level)


@contextlib.contextmanager
def _disk_full_named(directory, step: int | None):
  """Turns a full disk while checkpointing into a `files.WriteError` that
  names the directory (orbax and tensorstore name neither)."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-exception-caught
    if not _is_disk_full(error):
      raise
    what = "a checkpoint" if step is None else f"the checkpoint of step {step}"
    raise files.WriteError(
        f"{directory}: cannot write {what} (No space left on device); free"
        " space and rerun the same command: it resumes from the last"
        " checkpoint") from error


def _is_disk_full(error: BaseException | None) -> bool:
  """Whether `error` or an error behind it is a full disk (tensorstore
  reports one as text)."""
  seen = set()
  while error is not None and id(error) not in seen:
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC
        or "No space left on device" in str(error)):
      return True
    seen.add(id(error))
    error = error.__cause__ or error.__context__
  return False


class Progress:
  """Progress lines with rate and ETA, plus TensorBoard and JSON-lines logs.

  In a run on several processes only process 0 logs; the others' Progress
  does nothing.
  """

  def __init__(self, name: str, model_dir: str, total_steps: int,
               batch_size: int, start_step: int = 0):
    """Logs of a run that starts (or resumes) after `start_step`: records
    a stopped run wrote past it are dropped, as the run writes them again."""
    self.name, self.total_steps, self.batch_size = name, total_steps, batch_size
    self.active = distributed.is_main()
    if not self.active:
      return
    self.writer = tensorboardX.SummaryWriter(
        os.path.join(model_dir, "tensorboard"), purge_step=start_step + 1)
    log_path = os.path.join(model_dir, "metrics.jsonl")
    keep_records_through(log_path, start_step)
    self.log = open(log_path, "a")
    self.start_time, self.start_step = time.time(), None

  def record(self, kind: str, step: int, values: dict) -> None:
    if not self.active:
      return
    for key, value in values.items():
      self.writer.add_scalar(f"{kind}/{key}", value, step)
    try:
      self.log.write(json.dumps({"kind": kind, "step": step, **values})
                     + "\n")
      self.log.flush()
    except OSError as error:  # a full disk: name the file
      raise files.WriteError(f"{self.log.name}: cannot write"
                             f" ({error.strerror or error})") from error

  def step_line(self, step: int, epoch: int, values: dict) -> None:
    if not self.active:
      return
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
    if not self.active:
      return
    self.writer.close()
    self.log.close()


def keep_records_through(path: str, step: int) -> None:
  """Drops the records of JSON-lines log `path` past `step` (and a line a
  kill cut short); rewrites it atomically, and only if anything goes."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if line.endswith("\n") and record.get("step", math.inf) <= step:
      kept.append(line)
  if kept != lines:
    files.write_text(path, "".join(kept))


def _fresh_meta() -> dict:
  # epoch_losses: the losses of the epoch in progress, for a checkpoint
  # within it.
  return {"epoch": 0, "best_validation_loss": math.inf, "best_epoch": -1,
          "best_step": 0, "epochs_without_improvement": 0, "history": [],
          "epoch_losses": []}


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


def train_epoch(feed, state: TrainState, rng: jax.Array, step: int,
                num_steps: int, steps_per_dispatch: int, log_every: int,
                log, check, checkpoint=None, losses=()
                ) -> tuple[TrainState, list[float]]:
  """Runs `num_steps` train steps after `step`, `steps_per_dispatch` a call.

  The device runs ahead of the host: metrics stay on the device and are
  fetched together at logging steps and at the end (a fetch per step stalls
  the pipeline: ~1.5x slower steps on a 2-core CPU).

  Args:
    feed: a `HostFeed` or `ResidentFeed` positioned at `step`.
    state: the state after `step`.
    rng: the dropout key (each step folds in its number).
    step: the steps done before this epoch.
    num_steps: the steps of this epoch.
    steps_per_dispatch: steps per call of the feed.
    log_every: steps between `log` calls (and step 1).
    log: called with (step, metrics) of each logging step.
    check: called with (loss, step) of every step; raises to stop.
    checkpoint: None, or a `CheckpointClock` asked after each dispatch but
      the epoch's last (the epoch's own checkpoint follows that one).
    losses: the losses of the epoch's steps before `step` (a resumed epoch).

  Returns:
    The state after the epoch and each of the epoch's step losses.
  """
  pending, losses = [], list(losses)
  end = step + num_steps
  while step < end:
    count = min(steps_per_dispatch, end - step)
    state, metrics = feed.run(state, rng, count)
    pending.extend((step + 1 + i, m) for i, m in enumerate(metrics))
    logged = [s for s in range(step + 1, step + count + 1)
              if s % log_every == 0 or s == 1]
    step += count
    if logged:
      by_step = _fetch(pending, check)
      losses.extend(values["loss"] for values in by_step.values())
      for log_step in logged:
        log(log_step, by_step[log_step])
    if checkpoint is not None and step < end and checkpoint.due(step):
      by_step = _fetch(pending, check)
      losses.extend(values["loss"] for values in by_step.values())
      checkpoint.save(state, step, losses)
  by_step = _fetch(pending, check)
  losses.extend(values["loss"] for values in by_step.values())
  return state, losses


class HostFeed:
  """Training batches made on the host (by `workers` processes, 0: this
  one) and placed on the devices ahead of use; one step per dispatch."""

  def __init__(self, steps: Steps, split: input_pipeline.Split, kind: str,
               batch_size: int, seed: int, start_step: int, workers: int = 0,
               prefetch: int = 4):
    self.steps = steps
    self.batches = host_pipeline.DevicePrefetch(
        host_pipeline.train_batches(split, kind, batch_size, seed, start_step,
                                    workers, prefetch), steps.shard)

  def run(self, state: TrainState, rng: jax.Array, count: int):
    """`count` steps; returns the state and each step's metrics."""
    metrics = []
    for _ in range(count):
      state, step_metrics = self.steps.train(state, next(self.batches), rng)
      metrics.append(step_metrics)
    return state, metrics


class ResidentFeed:
  """Training batches gathered on the device: the host sends indices only,
  `count` steps' worth per dispatch."""

  def __init__(self, steps: Steps, tables: dict, split: input_pipeline.Split,
               kind: str, batch_size: int, seed: int, start_step: int):
    self.steps, self.tables = steps, tables
    self.indices = input_pipeline.train_indices(split, kind, batch_size, seed,
                                                start_step)

  def run(self, state: TrainState, rng: jax.Array, count: int):
    """`count` steps; returns the state and their metrics, stacked."""
    local_KxB = np.stack([next(self.indices) for _ in range(count)])
    state, metrics_K = self.steps.train_indexed(
        state, self.tables, self.steps.shard_indices(local_KxB), rng)
    return state, [metrics_K]


def dispatch_size(name: str, model_config) -> int:
  """Train steps per dispatch of model `name`: its config's, except 1 for
  conv models on CPU (see `train_steps_indexed`: 3-4x slower there)."""
  if model_config.steps_per_dispatch < 1:
    raise errors.ConfigError(
        f"config {name}.steps_per_dispatch must be >= 1, got"
        f" {model_config.steps_per_dispatch}")
  if models.has_conv_stack(name) and jax.default_backend() == "cpu":
    return 1
  return model_config.steps_per_dispatch


def tables_if_they_fit(name: str, steps: Steps, split: input_pipeline.Split,
                       kind: str, budget_mb: float) -> dict | None:
  """`split` placed on the devices if it fits the budget, else None."""
  megabytes = input_pipeline.resident_bytes(split, kind) / 2**20
  if megabytes > budget_mb:
    print(f"[{name}] {split.name} split read on the host: {megabytes:.0f} MB"
          f" > device_data_budget_mb={budget_mb}", flush=True)
    return None
  return steps.place_tables(split, kind)


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
    if (self.every_steps
        and step // self.every_steps > self.last_step // self.every_steps):
      return True
    return bool(self.every_seconds) and (
        time.monotonic() - self.last_time >= self.every_seconds)

  def save(self, state: TrainState, step: int, epoch_losses: list) -> None:
    self._save(state, step, epoch_losses)
    self.restart(step)


def _check_finite(name, loss, step, checkpoints: "Checkpoints",
                  what: str = "training"):
  if not math.isfinite(loss):
    raise FloatingPointError(
        f"model {name!r}: non-finite {what} loss ({loss}) at step {step};"
        " stopped."
        f" {checkpoints.describe()}. A rerun of the same command stops here"
        " again: lower the learning rate (in a new --workdir) or check the"
        " data.")


def shape_example(frames: int) -> dict:
  """A one-example batch of every model input, for shapes alone."""
  return {
      "mel": np.zeros((1, frames, audio.N_MELS), np.float32),
      "user_embedding": np.zeros((1, labels.USER_EMBEDDING_DIM), np.float32),
      "labels": np.zeros((1, labels.NUM_LABELS), np.float32),
      "mask": np.ones((1,), np.float32)}


def restore_best_state(name: str, config: ml_collections.ConfigDict,
                       workdir: str, frames: int) -> TrainState:
  """Model `name`'s best state, restored from shapes alone: no dataset, no
  real initialisation (jax.eval_shape)."""
  model = models.create_model(name, config[name])
  like = jax.eval_shape(functools.partial(
      create_train_state, model, config[name], jax.random.PRNGKey(0),
      shape_example(frames)))
  # Restored onto this process's first device, whatever devices and hosts
  # saved it: orbax refuses a checkpoint of another topology without a
  # target sharding.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  like = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
      leaf.shape, leaf.dtype, sharding=device), like)
  directory = os.path.join(workdir, name, "checkpoints")
  restored = Checkpoints.restore(Checkpoints(directory).best, like, name)
  if restored is None:
    raise errors.DatasetError(
        f"{directory}/best: no checkpoint; train model {name!r} first")
  return restored[0]


# The audio models' shared part: the input batch norm and the conv stack.
AUDIO_BRANCH = "ConvStack_0"


def with_audio_branch(state: TrainState, config: ml_collections.ConfigDict,
                      workdir: str, frames: int) -> TrainState:
  """`state` (audio + user) with its audio part taken from the trained audio
  model's best state: the conv stack (concatenation fusion) or the whole
  audio tagger (late fusion). The fusion then starts from audio features
  that already tell contexts apart, instead of learning them from single
  labels.
  """
  return with_trained_part(state, config, workdir, frames, "audio")


def with_trained_part(state: TrainState, config: ml_collections.ConfigDict,
                      workdir: str, frames: int, source: str) -> TrainState:
  """`state` (audio + user) with the part that
  `audio_user.<source>_init='<source>'` takes from trained model `source`
  ("audio" or "user"; models.TRANSFERS says which part, per fusion)."""
  fusion = config.audio_user.fusion
  setting = f"audio_user.{source}_init='{source}'"
  if (fusion, source) not in models.TRANSFERS:
    raise errors.ConfigError(
        f"config {setting} needs audio_user.fusion='late', got {fusion!r}")
  keys, ours, theirs = models.TRANSFERS[(fusion, source)]
  # Only the shapes matter: both conv paths name their parameters alike.
  for key in keys:
    if config[source][key] != config.audio_user[key]:
      raise errors.ConfigError(
          f"config {setting} needs the same {key} as the {source} model:"
          f" {source}.{key}={config[source][key]},"
          f" audio_user.{key}={config.audio_user[key]}")
  trained = restore_best_state(source, config, workdir, frames)
  def part(tree):
    return tree if theirs is None else tree[theirs]
  params = dict(state.params, **{ours: part(trained.params)})
  stats = dict(state.batch_stats, **{ours: part(trained.batch_stats)})
  return state.replace(params=params, batch_stats=stats,
                       opt_state=state.tx.init(params))


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
  if (name == "audio_user" and model_config.fusion == "late"
      and model_config.freeze_experts):
    return validation
  return train


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
  if distributed.is_main():  # the only process that writes there
    os.makedirs(model_dir, exist_ok=True)

  kind = models.BATCH_KINDS[name]
  batch_size = model_config.batch_size
  for key, size in ((f"{name}.batch_size", batch_size),
                    ("eval_batch_size", config.eval_batch_size)):
    if size % jax.device_count():
      raise errors.ConfigError(
          f"config {key}={size} is not divisible by the"
          f" {jax.device_count()} devices; use a multiple of"
          f" {jax.device_count()}")
  dispatch = dispatch_size(name, model_config)
  train = input_pipeline.load_split(dataset_path, "train")
  validation = input_pipeline.load_split(dataset_path, "validation")
  fitting = fitting_split(name, model_config, train, validation)
  per_epoch = (model_config.steps_per_epoch
               or input_pipeline.steps_per_epoch(fitting, kind, batch_size))
  total_steps = per_epoch * model_config.max_epochs

  init_rng, dropout_rng = jax.random.split(
      jax.random.fold_in(jax.random.PRNGKey(config.seed),
                         list(models.OUTPUTS).index(name)))
  steps, state = steps_and_state(name, config, train, init_rng)
  checkpoints = Checkpoints(os.path.join(model_dir, "checkpoints"),
                            cleanup=True)
  meta = _fresh_meta()
  restored = Checkpoints.restore(checkpoints.latest, state, name)
  # What a stopped run saved past the resumed step is redone, and saved
  # again: kept, it would clash with those saves.
  checkpoints.discard_after(0 if restored is None else
                            int(restored[0].step))
  if restored is None and model_config.audio_init == "audio":
    state = with_audio_branch(state, config, workdir,
                              train.mel_shape[0])
  if restored is None and model_config.user_init == "user":
    state = with_trained_part(state, config, workdir, train.mel_shape[0],
                              "user")
  if restored is not None:
    state, meta = restored
    done = len(meta["epoch_losses"])
    print(f"[{name}] resuming at step {int(state.step)}: epoch"
          f" {meta['epoch'] + 1}, {done} of its {per_epoch} steps done"
          if done else f"[{name}] resuming after epoch {meta['epoch']} (step"
          f" {int(state.step)})", flush=True)
  state = steps.place(state)

  budget = model_config.device_data_budget_mb
  train_tables = tables_if_they_fit(name, steps, fitting, kind, budget)
  validation_tables = (train_tables if fitting is validation else
                       tables_if_they_fit(name, steps, validation, kind,
                                          budget))
  if train_tables is None:
    feed = HostFeed(steps, fitting, kind, batch_size, config.seed,
                    int(state.step),
                    host_pipeline.workers_for(model_config.host_workers),
                    model_config.host_prefetch)
  else:
    feed = ResidentFeed(steps, train_tables, fitting, kind, batch_size,
                        config.seed, int(state.step))
  progress = Progress(name, model_dir, total_steps, batch_size,
                      int(state.step))
  stopped_early = False
  step = int(state.step)

  def save_within_epoch(state, at_step, epoch_losses):
    Checkpoints.save(checkpoints.latest, state,
                     dict(meta, epoch_losses=epoch_losses))

  clock = CheckpointClock(model_config.checkpoint_every_steps,
                          model_config.checkpoint_every_seconds, step,
                          save_within_epoch)
  try:
    for epoch in range(meta["epoch"], model_config.max_epochs):
      if meta["epochs_without_improvement"] >= model_config.patience:
        stopped_early = True
        break

      def log(log_step, values, epoch=epoch):
        progress.record("train", log_step, values)
        progress.step_line(log_step, epoch, values)

      epoch_end = (epoch + 1) * per_epoch
      state, epoch_losses = train_epoch(
          feed, state, dropout_rng, step, epoch_end - step, dispatch,
          config.log_every_steps, log,
          lambda loss, at: _check_finite(name, loss, at, checkpoints),
          clock, meta["epoch_losses"])
      step = epoch_end
      train_loss = float(np.mean(epoch_losses))
      loss = validation_loss(steps, state, validation, kind,
                             config.eval_batch_size, validation_tables)
      _check_finite(name, loss, step, checkpoints, "validation")
      improved = loss < meta["best_validation_loss"]
      meta["epoch"] = epoch + 1
      meta["epoch_losses"] = []
      meta["history"].append({"epoch": epoch + 1, "step": step,
                              "train_loss": train_loss,
                              "validation_loss": loss})
      # Every record up to a checkpoint's step is written before it: a
      # resumed run drops the records past its step and writes them again.
      progress.record("epoch", step, {"validation_loss": loss,
                                      "train_loss": train_loss})
      if improved:
        meta.update(best_validation_loss=loss, best_epoch=epoch + 1,
                    best_step=step, epochs_without_improvement=0)
        Checkpoints.save(checkpoints.best, state, meta)
      else:
        meta["epochs_without_improvement"] += 1
      Checkpoints.save(checkpoints.latest, state, meta)
      clock.restart(step)
      print(f"[{name}] epoch {epoch + 1}/{model_config.max_epochs}"
            f" validation loss {loss:.4f}"
            f"{' (best)' if improved else ''}", flush=True)
  except BaseException:
    # Closing can fail too (a full disk); the error in flight says more.
    for close in (checkpoints.close, progress.close):
      with contextlib.suppress(Exception):
        close()
    raise
  try:
    checkpoints.close()
  finally:
    progress.close()

  summary = {"model": name, "epochs": meta["epoch"],
             "best_epoch": meta["best_epoch"], "best_step": meta["best_step"],
             "best_validation_loss": meta["best_validation_loss"],
             "stopped_early": stopped_early, "steps_per_epoch": per_epoch,
             "history": meta["history"]}
  if distributed.is_main():
    files.write_text(summary_path, json.dumps(summary, indent=2))
  return summary


def steps_and_state(name: str, config: ml_collections.ConfigDict,
                     train: input_pipeline.Split, rng: jax.Array,
                     abstract: bool = False) -> tuple[Steps, TrainState]:
  """Model `name`'s jitted steps (class weights from `train`) and a fresh
  state initialised from `rng`; with `abstract`, only the state's shapes,
  dtypes and (replicated) shardings, at no cost."""
  kind = models.BATCH_KINDS[name]
  steps = Steps(class_weights(train, kind), models.OUTPUTS[name], kind)
  model = models.create_model(name, config[name])
  example = input_pipeline.example_batch(train, kind,
                                         config[name].batch_size)
  init = functools.partial(create_train_state, model, config[name], rng,
                           example)
  if not abstract:
    return steps, init()
  shapes = jax.eval_shape(init)
  return steps, jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=steps.replicated), shapes)


def restore_best(name: str, config: ml_collections.ConfigDict,
                 dataset_path: str, workdir: str) -> tuple[Steps, TrainState]:
  """The steps and best-by-validation state of a trained model."""
  train = input_pipeline.load_split(dataset_path, "train")
  steps, like = steps_and_state(name, config, train, jax.random.PRNGKey(0),
                                 abstract=True)
  checkpoint_dir = os.path.join(workdir, name, "checkpoints")
  restored = Checkpoints.restore(Checkpoints(checkpoint_dir).best, like,
                                 name)
  if restored is None:
    raise FileNotFoundError(
        f"{checkpoint_dir}/best: no checkpoint; train model {name!r} first")
  return steps, steps.place(restored[0])
