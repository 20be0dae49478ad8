"""Trained states between models: a model's best state, restored without its
training data, and the parts of trained models that a model starts from
(its section's `audio_init` and `user_init`)."""

import os

import jax
import ml_collections
import numpy as np

from ctxtag import audio
from ctxtag import checkpoints
from ctxtag import errors
from ctxtag import labels
from ctxtag import models
from ctxtag import steps as steps_lib

# The audio models' shared part: the input batch norm and the conv stack.
AUDIO_BRANCH = "ConvStack_0"


def shape_example(frames: int) -> dict:
  """A one-example batch of every model input, for shapes alone.

  Args:
    frames: the mels' frames.

  Returns:
    {input: zeros of one example}.
  """
  return {
      "mel": np.zeros((1, frames, audio.N_MELS), np.float32),
      "user_embedding": np.zeros((1, labels.USER_EMBEDDING_DIM), np.float32),
      "labels": np.zeros((1, labels.NUM_LABELS), np.float32),
      "mask": np.ones((1,), np.float32)}


def restore_best(name: str, config: ml_collections.ConfigDict, workdir: str,
                 frames: int, sharding: jax.sharding.Sharding | None = None
                 ) -> steps_lib.TrainState:
  """Model `name`'s best-by-validation state, restored from shapes alone: no
  dataset, no real initialisation (jax.eval_shape).

  Args:
    name: a trained model (ctxtag.models.MODELS).
    config: the run config.
    workdir: the run's directory (the model's checkpoints are in
      `<workdir>/<name>/checkpoints`).
    frames: the mels' frames (`Split.mel_shape[0]`).
    sharding: where the state goes, e.g. `Steps.replicated` (every device of
      a run); None: this process's first device, whatever devices and hosts
      saved it (orbax refuses a checkpoint of another topology without a
      target sharding).

  Returns:
    The state.

  Raises:
    errors.CheckpointError: no checkpoint of the model can be restored.
  """
  model = models.create_model(name, config[name])
  # The key as an argument: create_train_state then sees a tracer, and
  # compiles nothing.
  like = jax.eval_shape(
      lambda rng: steps_lib.create_train_state(
          model, config[name], rng, shape_example(frames)),
      jax.random.PRNGKey(0))
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  like = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(
      leaf.shape, leaf.dtype, sharding=sharding), like)
  directory = os.path.join(workdir, name, "checkpoints")
  with checkpoints.Checkpoints(directory) as saved:
    restored = saved.restore("best", like, name)
  if restored is None:
    raise errors.CheckpointError(
        f"{directory}/best: no checkpoint; train model {name!r} first")
  return restored[0]


def with_trained_parts(state: steps_lib.TrainState, name: str,
                       config: ml_collections.ConfigDict, workdir: str,
                       frames: int) -> steps_lib.TrainState:
  """`state` of model `name` with the parts its section's `audio_init` and
  `user_init` take from the trained models they name (the model entry's
  transfers say which part, per fusion): an audio + user model then starts
  from audio features that already tell contexts apart, instead of learning
  them from single labels.

  Args:
    state: a fresh state of model `name`.
    name: the model being trained.
    config: the run config.
    workdir: the run's directory, where the source models trained.
    frames: the mels' frames.

  Returns:
    `state` with those parts' parameters and batch statistics, and a fresh
    optimiser state if any part was taken.
  """
  for init_key in models.INIT_SOURCES:
    if config[name][init_key]:
      state = _with_part(state, name, config, workdir, frames, init_key)
  return state


def _with_part(state, name: str, config, workdir: str, frames: int,
               init_key: str) -> steps_lib.TrainState:
  """`with_trained_parts` for one init key."""
  section, source = config[name], config[name][init_key]
  fusion = section.fusion
  setting = f"{name}.{init_key}='{source}'"
  transfer = models.get(name).transfers.get((fusion, init_key))
  if transfer is None:
    fusions = [f for f, key in models.get(name).transfers if key == init_key]
    raise errors.ConfigError(
        f"config {setting} needs {name}.fusion="
        + (repr(fusions[0]) if len(fusions) == 1 else f"one of {fusions}")
        + f", got {fusion!r}")
  # Only the shapes matter: both conv paths name their parameters alike.
  for key in transfer.keys:
    if config[source][key] != section[key]:
      raise errors.ConfigError(
          f"config {setting} needs the same {key} as the {source} model:"
          f" {source}.{key}={config[source][key]},"
          f" {name}.{key}={section[key]}")
  trained = restore_best(source, config, workdir, frames)
  def part(tree):
    return tree if transfer.theirs is None else tree[transfer.theirs]
  params = dict(state.params, **{transfer.ours: part(trained.params)})
  stats = dict(state.batch_stats, **{transfer.ours: part(trained.batch_stats)})
  return state.replace(params=params, batch_stats=stats,
                       opt_state=state.tx.init(params))
