"""A model's steps: losses, state, jitted train/eval/predict steps, placement.

Steps run under `jax.jit` over a 1-D "data" mesh of all devices: batches are
sharded along it, the state is replicated, so the same code runs on one CPU
and on many accelerators. Each step comes in two forms: on a host batch, and
on a batch gathered by index from device-resident tables
(`ctxtag.device_data`); `validation_loss` and `predict` run either over a
whole split.
"""

import functools
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

from ctxtag import device_data
from ctxtag import errors
from ctxtag import input_pipeline
from ctxtag import labels
from ctxtag import models

MODEL_INPUTS = ("mel", "user_embedding", "labels", "mask")


class TrainState(train_state.TrainState):
  batch_stats: Any


# The optimisers a model section may name (its `optimizer` key, checked
# against this table in ctxtag/configs/default.py), from the section and its
# learning-rate schedule.
OPTIMIZERS = {
    "adam": lambda config, schedule: optax.adamw(
        schedule, weight_decay=config.weight_decay),
    "adadelta": lambda config, schedule: optax.adadelta(schedule),
}


def make_optimizer(config: ml_collections.ConfigDict):
  """optax optimiser with a staircase exponential learning-rate decay.

  Args:
    config: a model's section of the run config.

  Returns:
    The optax transformation.
  """
  schedule = optax.exponential_decay(
      config.learning_rate, transition_steps=config.decay_steps,
      decay_rate=config.decay_rate, staircase=True)
  return OPTIMIZERS[config.optimizer](config, schedule)


def class_weights(split: input_pipeline.Split, kind: str) -> np.ndarray:
  """The paper's weights: examples / positives of each context.

  Tracks count multi-label positives; pairs count their single context.

  Args:
    split: the training split.
    kind: its batch kind.

  Returns:
    The weight of each context, (10,) float32.
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
  """Per-example weighted loss, (B,).

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
  """Initialises parameters and batch statistics from an example batch.

  Args:
    model: the Flax model.
    config: its section of the run config (the optimiser's settings).
    rng: the initialisation key.
    example_batch: a batch of the model's inputs; only its shapes matter.

  Returns:
    The fresh state.
  """
  tx = make_optimizer(config)
  inputs = {k: v[:1] for k, v in example_batch.items() if k in MODEL_INPUTS}

  def fresh(rng, inputs):
    variables = model.init(rng, inputs, train=False)
    return variables, tx.init(variables["params"])

  fresh = jax.jit(fresh)
  if _tracing(rng):
    variables, opt_state = fresh(rng, inputs)
  else:
    variables, opt_state = fresh.lower(rng, inputs).compile(
        compiler_options=_init_compiler_options())(rng, inputs)
  # TrainState.create's state, built from the jitted program's outputs.
  return TrainState(
      step=0, apply_fn=model.apply, params=variables["params"], tx=tx,
      opt_state=opt_state, batch_stats=variables.get("batch_stats", {}))


def _tracing(value) -> bool:
  """Whether `value` is abstract (create_train_state under jax.eval_shape,
  whose shapes need no compiled program)."""
  return isinstance(value, jax.core.Tracer)


def _init_compiler_options() -> dict:
  """XLA options of the initialisation program.

  Run once per model, it took longer to compile than the model's train
  step on a CPU (2.5 of a 3.4 s init for the default audio tagger, mostly
  the random initialisers' threefry rounds); LLVM's optimisation level 1
  compiles it in a third of the time and gives the same bits (checked by
  tests/test_steps.py). Level 0 does not. Other backends keep theirs.
  """
  if jax.default_backend() != "cpu":
    return {}
  return {"xla_backend_optimization_level": 1}


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
                        indices_KxB: jax.Array, rng: jax.Array,
                        count: jax.Array, *, kind: str, weights_C: jax.Array,
                        output: str):
  """The first `count` of K optimiser steps on batches gathered from
  device-resident tables.

  One `lax.scan` over the steps: a single dispatch for K steps, and the
  metrics of each step stacked along a leading K axis. Steps from `count` on
  are padding, skipped (their metrics are zeros): an epoch's last dispatch,
  shorter than the others, runs the same compiled program instead of a
  second one (seconds of compilation for a small model on a CPU). K = 1
  runs without a loop: XLA:CPU gives convolutions inside a loop body none of
  its fast kernels (its convolution canonicalisation only visits the entry
  computation; 3-4x slower steps in python -m benchmarks.train_loop), so
  conv models on CPU run one step per dispatch.
  """
  def one_step(state, indices_B):
    batch = _barrier(dict(device_data.gather_batch(tables, indices_B, kind),
                          mask=jnp.ones(indices_B.shape, jnp.float32)))
    return train_step(state, batch, rng, weights_C=weights_C, output=output)

  if indices_KxB.shape[0] == 1:
    state, metrics = one_step(state, indices_KxB[0])
    return state, jax.tree.map(lambda value: value[None], metrics)
  skipped = jax.tree.map(
      lambda value: jnp.zeros(value.shape, value.dtype),
      jax.eval_shape(one_step, state, indices_KxB[0])[1])

  def step_or_skip(carry, indices_B):
    state, position = carry
    state, metrics = jax.lax.cond(
        position < count, one_step, lambda state, _: (state, skipped),
        state, indices_B)
    return (state, position + 1), metrics

  (state, _), metrics = jax.lax.scan(step_or_skip, (state, 0), indices_KxB)
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


def track_features_step(state: TrainState, batch: dict):
  """A pair model's per-track audio features for a batch of tracks (the
  model's output with `features_only=True`)."""
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
    batch = _barrier(dict(device_data.gather_batch(tables, indices_B, kind),
                          mask=mask_B))
    return step_fn(state, batch)
  return indexed


class Steps:
  """The model's steps, each jitted once over a 1-D "data" device mesh.

  `train`, `eval` and `predict` take host batches; with a batch `kind`,
  `train_indexed`, `eval_indexed` and `predict_indexed` take device-resident
  tables (`device_data.place_tables`) and example indices instead.
  """

  def __init__(self, weights_C: np.ndarray, output: str,
               kind: str | None = None, per_track_features: bool = False):
    """Compiles on first use the steps of a model.

    Args:
      weights_C: the class weights of the loss.
      output: "multi_label" or "single_label".
      kind: the batch kind of the indexed steps; None leaves them out.
      per_track_features: whether a pair model's evaluation computes its
        audio features once per track (the model entry's `track_features`).
    """
    self.per_track_features = per_track_features
    self.weights_C = np.asarray(weights_C, np.float32)
    # Grouped by process: each process's devices then hold the contiguous
    # share of every batch that the input pipeline gives that process.
    self.mesh = Mesh(np.asarray(sorted(
        jax.devices(), key=lambda d: (d.process_index, d.id))), ("data",))
    self.data = NamedSharding(self.mesh, P("data"))
    # Indices of K steps: each step's batch is sharded like a host batch.
    self.data_steps = NamedSharding(self.mesh, P(None, "data"))
    self.replicated = replicated = NamedSharding(self.mesh, P())
    weights = jax.device_put(weights_C, replicated)
    self._fns = {
        "train": functools.partial(train_step, weights_C=weights,
                                   output=output),
        "eval": functools.partial(eval_step, weights_C=weights, output=output),
        "predict": functools.partial(predict_step, output=output)}
    self._jit_host_steps()
    if kind is not None:
      self._jit_indexed_steps(kind, weights, output)

  def _jit_host_steps(self) -> None:
    replicated, data = self.replicated, self.data
    self.train = jax.jit(
        self._fns["train"], in_shardings=(replicated, data, replicated),
        out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval = jax.jit(self._fns["eval"], in_shardings=(replicated, data),
                        out_shardings=replicated)
    self.predict = jax.jit(self._fns["predict"],
                           in_shardings=(replicated, data),
                           out_shardings=data)
    self.track_features = jax.jit(
        track_features_step, in_shardings=(replicated, data),
        out_shardings=replicated)
    self.first_rows = jax.jit(
        lambda parts, count: jnp.concatenate(parts)[:count],
        static_argnums=1, out_shardings=replicated)

  def _jit_indexed_steps(self, kind: str, weights: jax.Array,
                         output: str) -> None:
    replicated, data = self.replicated, self.data
    self._train_indexed = jax.jit(
        functools.partial(train_steps_indexed, kind=kind, weights_C=weights,
                          output=output),
        in_shardings=(replicated, replicated, self.data_steps, replicated,
                      replicated),
        out_shardings=(replicated, replicated), donate_argnums=0)
    self.eval_indexed = jax.jit(
        _gathered(self._fns["eval"], kind),
        in_shardings=(replicated, replicated, data, data),
        out_shardings=replicated)
    self.predict_indexed = jax.jit(
        _gathered(self._fns["predict"], kind),
        in_shardings=(replicated, replicated, data, data),
        out_shardings=data)
    self.track_features_indexed = jax.jit(
        lambda state, mel_NxTxF, tracks_B: track_features_step(
            state, {"mel": mel_NxTxF[tracks_B].astype(jnp.float32)}),
        in_shardings=(replicated, replicated, data),
        out_shardings=replicated)

  def train_indexed(self, state: TrainState, tables: dict,
                    indices_KxB: jax.Array, rng: jax.Array,
                    count: int | None = None):
    """`train_steps_indexed`, jitted: the first `count` (default: all) of
    the K steps whose indices `indices_KxB` holds."""
    count = indices_KxB.shape[0] if count is None else count
    return self._train_indexed(state, tables, indices_KxB, rng,
                               np.int32(count))

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


def model_steps(name: str, train: input_pipeline.Split) -> Steps:
  """Model `name`'s steps, with the class weights of split `train`.

  Args:
    name: a trained model (ctxtag.models.MODELS).
    train: the training split.

  Returns:
    The steps, host and indexed.
  """
  model = models.get(name)
  return Steps(class_weights(train, model.batches), model.output,
               model.batches, model.track_features)


def steps_and_state(name: str, config: ml_collections.ConfigDict,
                    train: input_pipeline.Split,
                    rng: jax.Array) -> tuple[Steps, TrainState]:
  """Model `name`'s steps and a fresh state.

  Args:
    name: "audio", "audio_user" or "user".
    config: the run config.
    train: the training split (class weights, input shapes).
    rng: the initialisation key.

  Returns:
    `model_steps(name, train)` and a state initialised from `rng`.
  """
  model = models.create_model(name, config[name])
  example = input_pipeline.example_batch(train, models.BATCH_KINDS[name],
                                         config[name].batch_size)
  return model_steps(name, train), create_train_state(
      model, config[name], rng, example)


def _split_outputs(steps: Steps, which: str, state: TrainState,
                   split: input_pipeline.Split, kind: str, batch_size: int,
                   tables: dict | None) -> list:
  """Step `which`'s ("eval" or "predict") device outputs on every batch of
  `split` in order: from host batches, or indexed into `tables`."""
  if kind == "pairs" and steps.per_track_features:
    tables = device_data.pair_evaluation_tables(steps, state, split,
                                                batch_size, tables)
  if tables is None:
    step = getattr(steps, which)
    return [step(state, steps.shard(batch))
            for batch in input_pipeline.eval_batches(split, kind, batch_size)]
  step = getattr(steps, f"{which}_indexed")
  return [step(state, tables, steps.shard_indices(indices),
               steps.shard_indices(mask))
          for indices, mask in input_pipeline.eval_indices(split, kind,
                                                           batch_size)]


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
    tables: `device_data.place_tables(split, kind, ...)`, or None to read
      host batches.

  Returns:
    The mean of the per-example losses.
  """
  # Device scalars, fetched together: one wait, not one a batch.
  sums = _split_outputs(steps, "eval", state, split, kind, batch_size, tables)
  total, count = 0.0, 0.0
  for loss_sum, batch_count in jax.device_get(sums):
    total += float(loss_sum)
    count += float(batch_count)
  return total / count


def predict(steps: Steps, state: TrainState, split: input_pipeline.Split,
            kind: str, batch_size: int,
            tables: dict | None = None) -> np.ndarray:
  """Scores of every example of `split` in order, on every process.

  Args are those of `validation_loss`.

  Returns:
    The scores, (examples, 10).
  """
  scores = _split_outputs(steps, "predict", state, split, kind, batch_size,
                          tables)
  # The batches' global rows are the examples in order, then the last
  # batch's padding; the first rows, replicated, reach every process (a
  # sharded batch spans other processes' devices, which no process reads).
  return np.asarray(jax.device_get(steps.first_rows(
      scores, input_pipeline.num_examples(split, kind))))
