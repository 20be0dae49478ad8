"""Trained states between models: a model's best state, restored without its
training data, and the parts of trained models that the audio + user model
starts from (`audio_user.audio_init`, `audio_user.user_init`)."""

import functools
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
    name: "audio", "audio_user" or "user".
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
  like = jax.eval_shape(functools.partial(
      steps_lib.create_train_state, model, config[name],
      jax.random.PRNGKey(0), shape_example(frames)))
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


def with_audio_branch(state: steps_lib.TrainState,
                      config: ml_collections.ConfigDict, workdir: str,
                      frames: int) -> steps_lib.TrainState:
  """`state` (audio + user) with its audio part taken from the trained audio
  model's best state: the conv stack (concatenation fusion) or the whole
  audio tagger (late fusion). The fusion then starts from audio features
  that already tell contexts apart, instead of learning them from single
  labels.

  Args are those of `with_trained_part`, but `source`.
  """
  return with_trained_part(state, config, workdir, frames, "audio")


def with_trained_part(state: steps_lib.TrainState,
                      config: ml_collections.ConfigDict, workdir: str,
                      frames: int, source: str) -> steps_lib.TrainState:
  """`state` (audio + user) with the part that
  `audio_user.<source>_init='<source>'` takes from trained model `source`.

  Args:
    state: a fresh audio + user state.
    config: the run config.
    workdir: the run's directory, where `source` trained.
    frames: the mels' frames.
    source: "audio" or "user" (models.TRANSFERS says which part, per
      fusion).

  Returns:
    `state` with that part's parameters and batch statistics, and a fresh
    optimiser state.
  """
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
  trained = restore_best(source, config, workdir, frames)
  def part(tree):
    return tree if theirs is None else tree[theirs]
  params = dict(state.params, **{ours: part(trained.params)})
  stats = dict(state.batch_stats, **{ours: part(trained.batch_stats)})
  return state.replace(params=params, batch_stats=stats,
                       opt_state=state.tx.init(params))
