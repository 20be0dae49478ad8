"""The paper's taggers as pure Flax modules; every model returns logits.

  * `AudioTagger`: mel -> 10 multi-label logits (sigmoid outputs).
  * `AudioUserTagger`: mel + user embedding -> 10 single-label logits
    (softmax outputs), the paper's concatenation fusion; `deep=True` gives the
    later public version's deeper branches.
  * `UserTagger`: user embedding only -> 10 single-label logits, the baseline
    that tells how much of the user model's gain needs the audio at all.

Batch norm on the input is part of each model, as in the paper.
"""

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ctxtag import labels

# Flax's default batch-norm momentum is 0.99; TF1's layers used the same.
_BATCH_NORM_MOMENTUM = 0.99


def _batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train,
                      momentum=_BATCH_NORM_MOMENTUM, name=name)


class ConvStack(nn.Module):
  """Input batch norm, then [conv 3x3 SAME + ReLU + max-pool 2x2] per width."""
  widths: Sequence[int]

  @nn.compact
  def __call__(self, mel_BxTxF: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _batch_norm(train, name="input_norm")(mel_BxTxF[..., None])
    for width in self.widths:
      x = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    return x.reshape(x.shape[0], -1)


class UserBranch(nn.Module):
  """batch-norm(embedding) -> dense(s) -> batch-norm."""
  widths: Sequence[int]
  activation: str  # "linear" (the paper) or "relu" (the deep variant)

  @nn.compact
  def __call__(self, embedding_BxE: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _batch_norm(train, name="input_norm")(embedding_BxE)
    for width in self.widths:
      x = nn.Dense(width)(x)
      x = nn.relu(x) if self.activation == "relu" else x
    return _batch_norm(train, name="output_norm")(x)


class Head(nn.Module):
  """dense(hidden) sigmoid -> dropout -> dense(10) logits."""
  hidden: int
  dropout_rate: float

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nn.sigmoid(nn.Dense(self.hidden)(features))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return nn.Dense(labels.NUM_LABELS)(x)


class AudioTagger(nn.Module):
  """The paper's multi-label audio tagger."""
  conv_widths: Sequence[int]
  hidden: int
  dropout_rate: float

  @nn.compact
  def __call__(self, batch: dict, train: bool = False) -> jnp.ndarray:
    audio = ConvStack(self.conv_widths)(batch["mel"], train)
    return Head(self.hidden, self.dropout_rate)(audio, train)


class AudioUserTagger(nn.Module):
  """The paper's audio + user single-label tagger (concatenation fusion)."""
  conv_widths: Sequence[int]
  hidden: int
  dropout_rate: float
  user_widths: Sequence[int]
  deep: bool

  @nn.compact
  def __call__(self, batch: dict, train: bool = False) -> jnp.ndarray:
    audio = ConvStack(self.conv_widths)(batch["mel"], train)
    if self.deep:
      for width in (512, 256, 128):
        audio = nn.relu(nn.Dense(width)(audio))
      user = UserBranch((192, 128), "relu")(batch["user_embedding"], train)
    else:
      audio = _batch_norm(train, name="audio_norm")(audio)
      user = UserBranch(self.user_widths, "linear")(
          batch["user_embedding"], train)
    fused = jnp.concatenate([audio, user], axis=-1)
    return Head(self.hidden, self.dropout_rate)(fused, train)


class UserTagger(nn.Module):
  """The user-only baseline: the user branch and head, no audio."""
  hidden: int
  dropout_rate: float
  user_widths: Sequence[int]

  @nn.compact
  def __call__(self, batch: dict, train: bool = False) -> jnp.ndarray:
    user = UserBranch(self.user_widths, "linear")(
        batch["user_embedding"], train)
    return Head(self.hidden, self.dropout_rate)(user, train)


def create_model(name: str, config: ml_collections.ConfigDict) -> nn.Module:
  """The model `name` ("audio", "audio_user" or "user") built from `config`.

  Args:
    name: which model.
    config: the model section of a run config (see launch/configs/default.py).
  """
  if name == "audio":
    return AudioTagger(tuple(config.conv_widths), config.hidden,
                       config.dropout_rate)
  if name == "audio_user":
    return AudioUserTagger(tuple(config.conv_widths), config.hidden,
                           config.dropout_rate, tuple(config.user_widths),
                           config.deep)
  if name == "user":
    return UserTagger(config.hidden, config.dropout_rate,
                      tuple(config.user_widths))
  raise ValueError(f"unknown model {name!r}; known: audio, audio_user, user")


# What each model predicts: several contexts per track, or one per pair.
OUTPUTS = {"audio": "multi_label", "audio_user": "single_label",
           "user": "single_label"}
# The batches each model trains on.
BATCH_KINDS = {"audio": "tracks", "audio_user": "pairs", "user": "pairs"}
