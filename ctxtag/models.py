"""The paper's taggers as pure Flax modules; every model returns logits.

  * `AudioTagger`: mel -> 10 multi-label logits (sigmoid outputs).
  * `AudioUserTagger`: mel + user embedding -> 10 single-label logits
    (softmax outputs), the paper's concatenation fusion; `deep=True` gives the
    later public version's deeper branches.
  * `UserTagger`: user embedding only -> 10 single-label logits, the baseline
    that tells how much of the user model's gain needs the audio at all.

Batch norm on the input is part of each model, as in the paper.

`cpu_fast_path=True` swaps the conv blocks for the same maths arranged for
XLA:CPU, whose own kernels are slow on three of them (`python -m
benchmarks.train_step` on a 2-core AMD EPYC, paper sizes, per 8 examples;
benchmarks/README.md): max-pool gradients (select-and-
scatter), weight gradients (a convolution over the whole image, 30-48
GFLOP/s against ~95 for the forward pass) and the 1-channel first layer
(5-7 GFLOP/s). Here max-pooling is a reshape + max with a gradient that
routes each window's gradient to its first maximum (as select-and-scatter
does), ReLU follows the pool (equal, on a quarter of the values), large
layers' weight gradients are im2col matrix products over chunks of the
batch, and the first layer is nine shifted multiply-adds with a
matrix-product input gradient. On accelerators only the pooling (and the
ReLU after it) is rearranged: select-and-scatter is slow on a GPU too,
while its own convolutions are fast. Outputs and gradients equal the
straightforward model's to float rounding (tests/test_models.py).

Every model takes a compute `dtype`: with bfloat16 the layers compute in
bfloat16 while parameters (and so the optimiser state) stay float32, and the
logits come back float32 for the loss.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ctxtag import labels

# Flax's default batch-norm momentum is 0.99; TF1's layers used the same.
_BATCH_NORM_MOMENTUM = 0.99


def _batch_norm(train: bool, dtype: Any,
                name: str | None = None) -> nn.BatchNorm:
  # Flax computes the batch statistics in float32 whatever `dtype` is.
  return nn.BatchNorm(use_running_average=not train,
                      momentum=_BATCH_NORM_MOMENTUM, dtype=dtype, name=name)


class ConvStack(nn.Module):
  """Input batch norm, then [conv 3x3 SAME + ReLU + max-pool 2x2] per width."""
  widths: Sequence[int]
  dtype: Any = jnp.float32
  cpu_fast_path: bool = False

  @nn.compact
  def __call__(self, mel_BxTxF: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _batch_norm(train, self.dtype, name="input_norm")(
        mel_BxTxF[..., None])
    for index, width in enumerate(self.widths):
      if self.cpu_fast_path:
        x = FastConvBlock(width, self.dtype, _rearranged_convs(),
                          name=f"Conv_{index}")(x)
        continue
      x = nn.relu(nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype)(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    return x.reshape(x.shape[0], -1)


class FastConvBlock(nn.Module):
  """conv 3x3 SAME + ReLU + max-pool 2x2, arranged for speed.

  The pooling is always rearranged; the convolution too where
  `rearrange_convs` (CPUs). Its parameters are nn.Conv's (same names,
  shapes and initialisers), so a checkpoint serves either path.
  """
  features: int
  dtype: Any = jnp.float32
  rearrange_convs: bool = True

  @nn.compact
  def __call__(self, x_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (3, 3, x_BxHxWxC.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
    x = x_BxHxWxC.astype(self.dtype)
    conv = conv3x3 if self.rearrange_convs else _reference_conv
    z = conv(x, kernel.astype(self.dtype)) + bias.astype(self.dtype)
    return nn.relu(max_pool_2x2(z))


def _rearranged_convs() -> bool:
  """Whether the fast path rearranges the convolutions as well as the
  pooling: on CPUs only. On a GPU (H200, paper model, train step) XLA's own
  convolutions with the rearranged pooling gave 1.30-1.45x the
  straightforward step's examples/s, the CPU arrangement 1.11-1.14x."""
  return jax.default_backend() == "cpu"


def _pad_even(x_BxHxWxC: jnp.ndarray, value: float) -> jnp.ndarray:
  """Pads H and W at their end to even sizes, as SAME pooling does."""
  height, width = x_BxHxWxC.shape[1:3]
  return jnp.pad(x_BxHxWxC, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)),
                 constant_values=value)


def _windows(x_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
  """The 2x2 windows: (B, H/2, 2, W/2, 2, C) of the -inf-padded input."""
  x = _pad_even(x_BxHxWxC, -jnp.inf)
  batch, height, width, channels = x.shape
  return x.reshape(batch, height // 2, 2, width // 2, 2, channels)


def _pool_with_choice(x_BxHxWxC):
  """Each 2x2 window's max and which of its 4 elements (row-major) is the
  first maximum, the element XLA's select-and-scatter picks on ties."""
  windows = _windows(x_BxHxWxC)
  top_left, top_right = windows[:, :, 0, :, 0], windows[:, :, 0, :, 1]
  low_left, low_right = windows[:, :, 1, :, 0], windows[:, :, 1, :, 1]
  top = jnp.maximum(top_left, top_right)
  low = jnp.maximum(low_left, low_right)
  top_choice = jnp.where(top_left >= top_right, 0, 1).astype(jnp.int8)
  low_choice = jnp.where(low_left >= low_right, 2, 3).astype(jnp.int8)
  choice = jnp.where(top >= low, top_choice, low_choice)
  return jnp.maximum(top, low), choice


def max_pool_2x2(x_BxHxWxC: jnp.ndarray) -> jnp.ndarray:
  """nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")."""
  return _max_pool(x_BxHxWxC, x_BxHxWxC.shape[1:3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool(x_BxHxWxC, height_width):
  del height_width  # for the backward pass
  return _windows(x_BxHxWxC).max(axis=(2, 4))


def _max_pool_forward(x_BxHxWxC, height_width):
  # The choice is kept rather than found again in the backward pass by
  # comparing input and max: XLA may recompute a fused input there with
  # other rounding, and equality tests would then drop gradients.
  del height_width
  return _pool_with_choice(x_BxHxWxC)


def _max_pool_backward(height_width, choice, grad_BxhxwxC):
  grads = [jnp.where(choice == element, grad_BxhxwxC, 0)
           for element in range(4)]
  grad = jnp.stack([jnp.stack(grads[:2], axis=3), jnp.stack(grads[2:], axis=3)],
                   axis=2)
  batch, half_height, _, half_width, _, channels = grad.shape
  grad = grad.reshape(batch, half_height * 2, half_width * 2, channels)
  height, width = height_width
  return (grad[:, :height, :width],)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


def _shifted(x_BxHxWxC: jnp.ndarray) -> list[jnp.ndarray]:
  """The nine 3x3-tap views of the zero-padded input, row-major taps."""
  height, width = x_BxHxWxC.shape[1:3]
  padded = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return [padded[:, row:row + height, column:column + width]
          for row in range(3) for column in range(3)]


def _reference_conv(x_BxHxWxC, kernel_3x3xCxD):
  return jax.lax.conv_general_dilated(
      x_BxHxWxC, kernel_3x3xCxD, (1, 1), "SAME",
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@jax.custom_vjp
def conv3x3(x_BxHxWxC: jnp.ndarray, kernel_3x3xCxD: jnp.ndarray):
  """A 3x3 SAME convolution, stride 1, NHWC x HWIO -> NHWC, no bias."""
  if x_BxHxWxC.shape[-1] == 1:
    # One input channel: nine broadcast multiply-adds in one fused loop.
    taps_9xD = kernel_3x3xCxD.reshape(9, -1)
    return sum(view * taps_9xD[tap]
               for tap, view in enumerate(_shifted(x_BxHxWxC)))
  return _reference_conv(x_BxHxWxC, kernel_3x3xCxD)


def _conv_forward(x_BxHxWxC, kernel_3x3xCxD):
  return conv3x3(x_BxHxWxC, kernel_3x3xCxD), (x_BxHxWxC, kernel_3x3xCxD)


def _conv_backward(residuals, grad_BxHxWxD):
  x_BxHxWxC, kernel_3x3xCxD = residuals
  if x_BxHxWxC.shape[-1] == 1:
    grad_x = _one_channel_input_grad(kernel_3x3xCxD, grad_BxHxWxD)
  else:  # XLA's own input gradient is a fast, canonical convolution
    _, vjp = jax.vjp(lambda x: _reference_conv(x, kernel_3x3xCxD), x_BxHxWxC)
    grad_x = vjp(grad_BxHxWxD)[0]
  _, height, width, channels = x_BxHxWxC.shape
  if height * width * channels * kernel_3x3xCxD.shape[-1] < _IM2COL_MIN_MACS:
    _, vjp = jax.vjp(lambda k: _reference_conv(x_BxHxWxC, k), kernel_3x3xCxD)
    return grad_x, vjp(grad_BxHxWxD)[0]
  return grad_x, _kernel_grad(x_BxHxWxC, grad_BxHxWxD).astype(
      kernel_3x3xCxD.dtype)


conv3x3.defvjp(_conv_forward, _conv_backward)


def _one_channel_input_grad(kernel_3x3x1xD, grad_BxHxWxD):
  """Input gradient of a 1-channel conv: one (BHW, D) x (D, 9) product,
  then each tap's column added back at its offset."""
  batch, height, width, depth = grad_BxHxWxD.shape
  per_tap = (grad_BxHxWxD.reshape(-1, depth)
             @ kernel_3x3x1xD.reshape(9, depth).T).reshape(
                 batch, height, width, 9)
  padded = jnp.pad(per_tap, ((0, 0), (1, 1), (1, 1), (0, 0)))
  grad = sum(padded[:, 2 - row:2 - row + height, 2 - column:2 - column + width,
                    3 * row + column]
             for row in range(3) for column in range(3))
  return grad[..., None]


# Per-example size (H W C D) from which im2col weight gradients beat XLA's
# (python -m benchmarks.train_step, per layer): faster for every layer of
# the paper's model (2M to 32M), slower for every layer of the default one
# (0.05M to 0.22M).
_IM2COL_MIN_MACS = 1_000_000
# Bytes of im2col patches per chunk of the batch, near a CPU's last-level
# cache (best in python -m benchmarks.train_step with a 32 MB L3: 2 examples
# of the paper's second layer, 36 MB; the whole batch at once was 2x
# slower).
_PATCH_CHUNK_BYTES = 40 * 2**20


def _kernel_grad(x_BxHxWxC, grad_BxHxWxD):
  """(3, 3, C, D) weight gradient as im2col products over batch chunks."""
  batch, height, width, channels = x_BxHxWxC.shape
  depth = grad_BxHxWxD.shape[-1]
  example_bytes = height * width * 9 * channels * x_BxHxWxC.dtype.itemsize
  chunk = _largest_divisor(batch, max(1, _PATCH_CHUNK_BYTES // example_bytes))

  def add_chunk(total, chunk_inputs):
    x, grad = chunk_inputs
    patches = jnp.concatenate(_shifted(x), axis=-1).reshape(-1, 9 * channels)
    return total + jnp.dot(patches.T, grad.reshape(-1, depth),
                           preferred_element_type=jnp.float32), None

  chunks = (x_BxHxWxC.reshape(batch // chunk, chunk, height, width, channels),
            grad_BxHxWxD.reshape(batch // chunk, chunk, height, width, depth))
  total, _ = jax.lax.scan(add_chunk, jnp.zeros((9 * channels, depth),
                                               jnp.float32), chunks)
  return total.reshape(3, 3, channels, depth)


@functools.lru_cache(maxsize=None)
def _largest_divisor(number: int, at_most: int) -> int:
  return max(d for d in range(1, min(number, at_most) + 1) if number % d == 0)


class UserBranch(nn.Module):
  """batch-norm(embedding) -> dense(s) -> batch-norm."""
  widths: Sequence[int]
  activation: str  # "linear" (the paper) or "relu" (the deep variant)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, embedding_BxE: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = _batch_norm(train, self.dtype, name="input_norm")(embedding_BxE)
    for width in self.widths:
      x = nn.Dense(width, dtype=self.dtype)(x)
      x = nn.relu(x) if self.activation == "relu" else x
    return _batch_norm(train, self.dtype, name="output_norm")(x)


class Head(nn.Module):
  """dense(hidden) sigmoid -> dropout -> dense(10) logits."""
  hidden: int
  dropout_rate: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nn.sigmoid(nn.Dense(self.hidden, dtype=self.dtype)(features))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(labels.NUM_LABELS, dtype=self.dtype)(x)
    return logits.astype(jnp.float32)  # losses are taken in float32


class AudioTagger(nn.Module):
  """The paper's multi-label audio tagger."""
  conv_widths: Sequence[int]
  hidden: int
  dropout_rate: float
  dtype: Any = jnp.float32
  cpu_fast_path: bool = False

  @nn.compact
  def __call__(self, batch: dict, train: bool = False) -> jnp.ndarray:
    audio = ConvStack(self.conv_widths, self.dtype, self.cpu_fast_path)(
        batch["mel"], train)
    return Head(self.hidden, self.dropout_rate, self.dtype)(audio, train)


class AudioUserTagger(nn.Module):
  """The paper's audio + user single-label tagger (concatenation fusion)."""
  conv_widths: Sequence[int]
  hidden: int
  dropout_rate: float
  user_widths: Sequence[int]
  deep: bool
  dtype: Any = jnp.float32
  cpu_fast_path: bool = False

  @nn.compact
  def __call__(self, batch: dict, train: bool = False,
               features_only: bool = False) -> jnp.ndarray:
    """Logits of the batch's pairs.

    Args:
      batch: "user_embedding" and either "mel" or "audio_features", the
        conv stack's output for the pair's track (evaluation computes it
        once per track rather than once per pair).
      train: batch statistics and dropout, or running averages.
      features_only: return the conv stack's output for "mel" instead.
    """
    if "audio_features" in batch:
      audio = batch["audio_features"]
    else:
      audio = ConvStack(self.conv_widths, self.dtype, self.cpu_fast_path)(
          batch["mel"], train)
    if features_only:
      return audio
    if self.deep:
      for width in (512, 256, 128):
        audio = nn.relu(nn.Dense(width, dtype=self.dtype)(audio))
      user = UserBranch((192, 128), "relu", self.dtype)(
          batch["user_embedding"], train)
    else:
      audio = _batch_norm(train, self.dtype, name="audio_norm")(audio)
      user = UserBranch(self.user_widths, "linear", self.dtype)(
          batch["user_embedding"], train)
    fused = jnp.concatenate([audio, user.astype(audio.dtype)], axis=-1)
    return Head(self.hidden, self.dropout_rate, self.dtype)(fused, train)


class LateFusionTagger(nn.Module):
  """Audio + user as a weighted product of experts (beyond the paper):

      logits(track, user) = audio_weight * audio_logits(track)
                            + user_weight * (user_logits(user)
                                             - user_logits(typical user))
                            + prior_weight * user_logits(typical user),

  p(context | track, user) proportional to p_audio^a * p_user^b * p_typ^c,
  the user expert counted by how the user departs from the typical user
  (the embedding at its input batch norm's running mean), and the typical
  user's logits, the user-only model's per-context constant, weighted on
  their own (c starts at 0, the two-weight product). The experts
  are an `AudioTagger` (submodule "audio") and a `UserTagger` ("user"),
  parameter trees equal to the audio and user-only models', meant to start
  from those trained models (audio_init="audio", user_init="user"). With
  `freeze_experts` they stay those models as evaluated (running batch-norm
  statistics, no dropout, no gradient) and only the three weights train.
  Where users say nothing the centred user term is small noise and the
  answers stay close to the audio model's. With frozen experts the three
  weights are fitted on pairs neither expert has seen (the validation
  split), since on its own training pairs each expert is overconfident.
  Scalar weights keep each expert's ranking of contexts; per-context
  weights would recalibrate the class-weighted experts. The fitted weights
  across worlds, and what per-context weights lost: docs/study.md, "The
  late fusion's weights".
  """
  conv_widths: Sequence[int]
  hidden: int
  dropout_rate: float
  user_widths: Sequence[int]
  freeze_experts: bool
  dtype: Any = jnp.float32
  cpu_fast_path: bool = False

  @nn.compact
  def __call__(self, batch: dict, train: bool = False,
               features_only: bool = False) -> jnp.ndarray:
    """Logits of the batch's pairs.

    Args:
      batch: "user_embedding" and either "mel" or "audio_features", here
        the audio expert's logits for the pair's track (evaluation computes
        them once per track rather than once per pair).
      train: batch statistics and dropout, or running averages.
      features_only: return the audio expert's logits for "mel" instead.
    """
    experts_train = train and not self.freeze_experts
    if "audio_features" in batch:
      audio_logits = batch["audio_features"]
    else:
      audio_logits = self._frozen(AudioTagger(
          self.conv_widths, self.hidden, self.dropout_rate, self.dtype,
          self.cpu_fast_path, name="audio")(batch, train=experts_train))
    if features_only:
      return audio_logits
    user_expert = UserTagger(self.hidden, self.dropout_rate, self.user_widths,
                             self.dtype, name="user")
    user_logits = user_expert(batch, train=experts_train)
    # The user term is how this user departs from the typical user (the
    # expert at its input's running mean): the user-only model's logits
    # also hold a per-context constant, the class weights' pull toward rare
    # contexts, which must not enter the product where users say nothing.
    mean_embedding = user_expert.variables["batch_stats"]["UserBranch_0"][
        "input_norm"]["mean"]
    typical = user_expert({"user_embedding": mean_embedding[None]},
                          train=False)
    user_logits = self._frozen(user_logits - typical)
    typical = self._frozen(typical)
    audio_weight = self.param("audio_weight", nn.initializers.ones_init(),
                              ())
    user_weight = self.param("user_weight", nn.initializers.ones_init(), ())
    # The typical user's logits, the per-context constant left out of the
    # centred term, weighted on their own (0 at the start: the product as
    # it was); where the track says nothing it stands in for what the audio
    # term otherwise had to.
    prior_weight = self.param("prior_weight", nn.initializers.zeros_init(),
                              ())
    return (audio_weight * audio_logits + user_weight * user_logits
            + prior_weight * typical)

  def _frozen(self, logits: jnp.ndarray) -> jnp.ndarray:
    return jax.lax.stop_gradient(logits) if self.freeze_experts else logits


class UserTagger(nn.Module):
  """The user-only baseline: the user branch and head, no audio."""
  hidden: int
  dropout_rate: float
  user_widths: Sequence[int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, batch: dict, train: bool = False) -> jnp.ndarray:
    user = UserBranch(self.user_widths, "linear", self.dtype)(
        batch["user_embedding"], train)
    return Head(self.hidden, self.dropout_rate, self.dtype)(user, train)


# How an audio + user model fuses its inputs: the paper's concatenation
# before a shared head, or the product of experts of LateFusionTagger.
FUSIONS = ("concat", "late")

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# What a model predicts: several contexts per track (sigmoid outputs), or
# one context per (user, track) pair (softmax outputs).
OUTPUT_KINDS = ("multi_label", "single_label")


def _compute_dtype(config: ml_collections.ConfigDict):
  if config.compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"config compute_dtype must be one of"
                     f" {sorted(COMPUTE_DTYPES)}, got {config.compute_dtype!r}")
  return COMPUTE_DTYPES[config.compute_dtype]


def _cpu_fast_path(config) -> bool:
  """The config's switch: the conv blocks arranged for XLA:CPU on CPUs, and
  with their pooling alone rearranged on accelerators (`_rearranged_convs`)."""
  return bool(config.cpu_fast_path)


def audio_tagger(config: ml_collections.ConfigDict) -> nn.Module:
  """`AudioTagger` from a model section."""
  return AudioTagger(tuple(config.conv_widths), config.hidden,
                     config.dropout_rate, _compute_dtype(config),
                     _cpu_fast_path(config))


def audio_user_tagger(config: ml_collections.ConfigDict) -> nn.Module:
  """The section's fusion: `LateFusionTagger` or `AudioUserTagger`."""
  if config.fusion not in FUSIONS:
    raise ValueError(f"config fusion must be one of {list(FUSIONS)}, got"
                     f" {config.fusion!r}")
  if config.fusion == "late":
    return LateFusionTagger(tuple(config.conv_widths), config.hidden,
                            config.dropout_rate, tuple(config.user_widths),
                            config.freeze_experts, _compute_dtype(config),
                            _cpu_fast_path(config))
  return AudioUserTagger(tuple(config.conv_widths), config.hidden,
                         config.dropout_rate, tuple(config.user_widths),
                         config.deep, _compute_dtype(config),
                         _cpu_fast_path(config))


def user_tagger(config: ml_collections.ConfigDict) -> nn.Module:
  """`UserTagger` from a model section."""
  return UserTagger(config.hidden, config.dropout_rate,
                    tuple(config.user_widths), _compute_dtype(config))


@dataclasses.dataclass(frozen=True)
class Transfer:
  """A trained part a model starts from (its section's `audio_init` or
  `user_init` names the trained model).

  Attributes:
    keys: the section keys that must equal the source model's (the part's
      shapes follow from them).
    ours: where the part lives in this model's parameter tree.
    theirs: where it lives in the source model's (None: its whole tree).
  """
  keys: tuple[str, ...]
  ours: str
  theirs: str | None


# What audio_init and user_init take, per fusion of an audio + user model.
AUDIO_USER_TRANSFERS = {
    ("concat", "audio_init"): Transfer(("conv_widths",), "ConvStack_0",
                                       "ConvStack_0"),
    ("late", "audio_init"): Transfer(("conv_widths", "hidden"), "audio", None),
    ("late", "user_init"): Transfer(("hidden", "user_widths"), "user", None),
}
# The batches a model's audio_init (user_init) must name a trained model of.
INIT_SOURCES = {"audio_init": "tracks", "user_init": "users"}


@dataclasses.dataclass(frozen=True)
class Model:
  """Everything about one model of a study, in one place: training,
  prediction, evaluation, the report, the plots and the sweeps derive what
  they need from it.

  A model's name is also its config section (`config.<name>`, the keys of
  configs/default.py's `model_config`), its directory in a workdir, its
  prediction CSVs (`predictions/<split>_<name>.csv`) and its key in
  results.json's per-model parts (satisfaction, ranking).

  Attributes:
    name: as above.
    display: its name in report.md and the plots.
    output: OUTPUT_KINDS: "multi_label" (scored per track, and by the
      track protocols MO-MG and MO-SG) or "single_label" (per pair).
    batches: what its training batches hold (input_pipeline.KINDS):
      "tracks" (mels and multi-hot labels), "pairs" (mels, users, labels) or
      "users" (users and labels, no mel: it never reads one).
    build: the Flax module from its config section; None for a model that
      is not trained (the oracle: the simulated world's true distribution).
    sg_protocol: results.json's key of its single-output SG protocol (its
      one answer per pair against the user's context).
    sg_title: that protocol's row in report.md.
    sg_plot: that protocol's row in the plots.
    sg_decision: how its scores become its one answer per pair for that
      protocol and for satisfaction (ctxtag.evaluation.protocols.DECISIONS).
    track_features: a pair model whose module returns per-track audio
      features with `features_only=True` and reads them back from
      `batch["audio_features"]` instead of "mel": its evaluation computes
      them once per track (a track has several pairs) instead of per pair.
    style: (matplotlib line format, colour) in the sweeps' plots.
    transfers: (fusion, init key) -> Transfer: the trained parts it may
      start from.
    compared_with: the models it is compared with, paired on the same users
      (results' comparisons `<name>_vs_<other>`), if both are evaluated.
  """
  name: str
  display: str
  output: str
  batches: str
  build: Callable[[ml_collections.ConfigDict], nn.Module] | None
  sg_protocol: str
  sg_title: str
  sg_plot: str
  style: tuple[str, str | None] = ("o-", None)
  transfers: Mapping[tuple[str, str], Transfer] = dataclasses.field(
      default_factory=dict)
  compared_with: tuple[str, ...] = ()
  sg_decision: str = "argmax"
  track_features: bool = False

  @property
  def trained(self) -> bool:
    return self.build is not None

  @property
  def reads_audio(self) -> bool:
    """Whether it reads mels (through the conv stack)."""
    return self.batches != "users"

  def prefixed(self, key: str) -> str:
    """The results key of a track protocol (mo_mg, mo_sg, ...) of this
    multi-label model: `key` for "audio", `<name>_<key>` for any other."""
    return key if self.name == "audio" else f"{self.name}_{key}"


# Every model in report order; a caller (a test, a researcher's script) may
# add an entry (`MODELS[model.name] = model`) before it configures a run.
MODELS: dict[str, Model] = {model.name: model for model in (
    Model("audio", "audio", "multi_label", "tracks", audio_tagger,
          "so_sg", "SO-SG, audio (argmax, vs user's context)",
          "audio, top context vs user's context (SO-SG)", ("o-", "C0")),
    Model("audio_user", "audio + user", "single_label", "pairs",
          audio_user_tagger, "user_sg", "SG, audio + user",
          "audio + user (SG)", ("s-", "C1"), AUDIO_USER_TRANSFERS,
          ("audio", "user"), track_features=True),
    Model("user", "user only", "single_label", "users", user_tagger,
          "user_only_sg", "SG, user only", "user only (SG)", ("^-", "C2"),
          compared_with=("audio",)),
    Model("oracle", "oracle (true distribution)", "single_label", "pairs",
          None, "oracle_sg", "SG, oracle (true distribution)",
          "oracle, true distribution (SG)", ("--", "k")),
    # The paper's concatenation beside the late fusion in one run (config
    # variant ctxtag/configs/fusions.py), compared on the same users.
    Model("audio_user_concat", "audio + user (concatenation)",
          "single_label", "pairs", audio_user_tagger, "audio_user_concat_sg",
          "SG, audio + user (concatenation)",
          "audio + user, concatenation (SG)", ("D-", "C4"),
          AUDIO_USER_TRANSFERS, ("audio", "user", "audio_user"),
          track_features=True),
)}


def get(name: str) -> Model:
  """The entry of model `name`; a ValueError naming the known ones."""
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
  return MODELS[name]


def trained_models() -> list[str]:
  """The models a run can train (config.models names some of them)."""
  return [name for name, model in MODELS.items() if model.trained]


def comparisons(names) -> list[tuple[str, str]]:
  """The (a, b) pairs compared among `names` (a - b): by b, then a, in
  MODELS order (everything against the audio model first)."""
  order = {name: index for index, name in enumerate(MODELS)}
  pairs = [(name, other) for name in names if name in MODELS
           for other in MODELS[name].compared_with if other in names]
  return sorted(pairs, key=lambda pair: (order[pair[1]], order[pair[0]]))


class _Column(Mapping):
  """One attribute of every trained entry, read live from MODELS (so an
  entry a caller adds is in it too): name -> attribute."""

  def __init__(self, attribute: str):
    self._attribute = attribute

  def __getitem__(self, name: str):
    if name not in MODELS or not MODELS[name].trained:
      raise KeyError(name)
    return getattr(MODELS[name], self._attribute)

  def __iter__(self):
    return iter(trained_models())

  def __len__(self) -> int:
    return len(trained_models())


OUTPUTS = _Column("output")  # name -> "multi_label" | "single_label"
BATCH_KINDS = _Column("batches")  # name -> "tracks" | "pairs" | "users"


def has_conv_stack(name: str) -> bool:
  """Whether model `name` reads audio through the conv stack."""
  return get(name).reads_audio


def create_model(name: str, config: ml_collections.ConfigDict) -> nn.Module:
  """Model `name`'s Flax module built from its config section.

  Args:
    name: a trained entry of MODELS.
    config: the model's section of a run config (ctxtag/configs/default.py).
  """
  model = get(name)
  if not model.trained:
    raise ValueError(f"model {name!r} is not trained; trained models:"
                     f" {', '.join(trained_models())}")
  return model.build(config)


def describe(name: str, section: ml_collections.ConfigDict) -> dict:
  """What a checkpoint of model `name` is a state of, as JSON: the entry,
  its config section, and the Flax module with its constructor fields (so a
  reader with Flax alone can build it: docs/training.md)."""
  module = create_model(name, section)
  fields = {}
  for field in dataclasses.fields(module):
    if field.name in ("parent", "name"):
      continue
    value = getattr(module, field.name)
    if field.name == "dtype":
      value = jnp.dtype(value).name
    elif isinstance(value, tuple):
      value = list(value)
    fields[field.name] = value
  kind = type(module)
  model = get(name)
  return {"model": name, "output": model.output, "batches": model.batches,
          "module": f"{kind.__module__}.{kind.__qualname__}",
          "module_fields": fields, "section": section.to_dict()}


def module_of(description: dict) -> nn.Module:
  """The Flax module a checkpoint's description (`describe`) names, built
  from its entry and section."""
  return create_model(description["model"],
                      ml_collections.ConfigDict(description["section"]))
