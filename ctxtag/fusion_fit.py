"""The late fusion's three weights with frozen experts, fitted exactly.

With both experts frozen (`models.LateFusionTagger`, `freeze_experts`), a
pair's logits are a*A + b*U + c*T: A the audio expert's logits for its
track, U the user expert's departure from the typical user, T the typical
user's logits. Only (a, b, c) are trained, and the loss (class-weighted
softmax cross-entropy, `steps.example_losses`) is convex in them, since the
logits are linear in the weights. So the experts run once over the fitting
pairs (`expert_terms`), and Newton's method on the three weights
(`newton_fit`) reaches the optimum that epochs of SGD over the conv stack
only approach.
"""

import dataclasses
import time

import jax
import numpy as np

from ctxtag import device_data
from ctxtag import input_pipeline

WEIGHTS = ("audio_weight", "user_weight", "prior_weight")
# Pairs per call of the user expert: its inputs are the embeddings alone.
_USER_CHUNK = 8192
# The fit stops when no weight's gradient is above this (the loss is O(1);
# float64 Newton reaches it in a few iterations), or after _MAX_ITERATIONS.
_GRADIENT_TOLERANCE = 1e-10
_MAX_ITERATIONS = 100


@dataclasses.dataclass(frozen=True)
class Fit:
  """The outcome of `newton_fit`.

  Attributes:
    weights: (a, b, c), the audio, user and prior weights.
    loss: the mean weighted loss over the fitting pairs at `weights`.
    iterations: Newton steps taken.
    gradient_norm: the largest absolute gradient at `weights`.
    seconds: the fit's time (the experts' pass excluded).
  """
  weights: tuple[float, float, float]
  loss: float
  iterations: int
  gradient_norm: float
  seconds: float


def expert_terms(steps, state, split: input_pipeline.Split,
                 batch_size: int) -> np.ndarray:
  """The three terms of every pair's logits, (pairs, 3, contexts): A, U, T.

  Args:
    steps: the fusion's `steps.Steps`.
    state: its state (the experts' parameters as trained).
    split: the fitting pairs.
    batch_size: the global evaluation batch of the audio expert's pass.
  """
  # The audio expert once per track, as evaluation computes it.
  tables = device_data.pair_evaluation_tables(steps, state, split,
                                              batch_size, None)
  audio_NxC = np.asarray(jax.device_get(tables["audio_features_NxD"]),
                         np.float64)
  params = jax.device_get(state.params)
  variables = {"batch_stats": jax.device_get(state.batch_stats)}
  apply = jax.jit(lambda params, batch: state.apply_fn(
      {**variables, "params": params}, batch, train=False))
  terms = [audio_NxC[split.pair_track_P]]
  for weight in WEIGHTS[1:]:
    only = {**params, **{w: np.float32(w == weight) for w in WEIGHTS}}
    parts = []
    for start in range(0, split.num_pairs, _USER_CHUNK):
      embedding = split.user_embedding_PxE[start:start + _USER_CHUNK]
      parts.append(np.asarray(apply(only, {
          "user_embedding": embedding,
          "audio_features": np.zeros((len(embedding), audio_NxC.shape[1]),
                                     np.float32)})))
    terms.append(np.concatenate(parts).astype(np.float64))
  return np.stack(terms, axis=1)


def _loss_gradient_hessian(weights_K, terms_PxKxC, label_P, example_weight_P,
                           derivatives: bool = True):
  logits_PxC = np.einsum("pkc,k->pc", terms_PxKxC, weights_K)
  top_P = logits_PxC.max(axis=1, keepdims=True)
  exp_PxC = np.exp(logits_PxC - top_P)
  total_P = exp_PxC.sum(axis=1, keepdims=True)
  log_partition_P = (np.log(total_P) + top_P)[:, 0]
  rows = np.arange(len(label_P))
  loss = np.mean(example_weight_P
                 * (log_partition_P - logits_PxC[rows, label_P]))
  if not derivatives:
    return loss, None, None
  probs_PxC = exp_PxC / total_P
  expected_PxK = np.einsum("pkc,pc->pk", terms_PxKxC, probs_PxC)
  gradient_K = np.mean(example_weight_P[:, None] * (
      expected_PxK - terms_PxKxC[rows, :, label_P]), axis=0)
  second_KxK = np.einsum("p,pkc,plc,pc->kl", example_weight_P, terms_PxKxC,
                         terms_PxKxC, probs_PxC) / len(label_P)
  hessian_KxK = second_KxK - np.einsum(
      "p,pk,pl->kl", example_weight_P, expected_PxK,
      expected_PxK) / len(label_P)
  return loss, gradient_K, hessian_KxK


def loss_at(weights, terms_PxKxC: np.ndarray, label_P: np.ndarray,
            class_weights_C: np.ndarray) -> float:
  """The mean class-weighted softmax cross-entropy of the pairs at
  `weights` (the training loss, in float64)."""
  return float(_loss_gradient_hessian(
      np.asarray(weights, np.float64), terms_PxKxC, label_P,
      np.asarray(class_weights_C, np.float64)[label_P], False)[0])


def newton_fit(terms_PxKxC: np.ndarray, label_P: np.ndarray,
               class_weights_C: np.ndarray,
               start=(1.0, 1.0, 0.0)) -> Fit:
  """The weights minimising the mean class-weighted loss of the pairs.

  Newton's method with a backtracking line search (the loss is convex and
  smooth; the line search keeps a step from overshooting where it is flat).
  A singular Hessian (a term that is zero on every pair: a user expert that
  says nothing) is regularised just enough to solve.

  Args:
    terms_PxKxC: `expert_terms`.
    label_P: each pair's context index.
    class_weights_C: the loss's class weights (the training split's).
    start: the first iterate (the module's initial weights).

  Returns:
    The `Fit`.
  """
  begin = time.perf_counter()
  weight_P = np.asarray(class_weights_C, np.float64)[label_P]
  weights_K = np.asarray(start, np.float64)
  loss, gradient_K, hessian_KxK = _loss_gradient_hessian(
      weights_K, terms_PxKxC, label_P, weight_P)
  iterations = 0
  while (np.abs(gradient_K).max() > _GRADIENT_TOLERANCE
         and iterations < _MAX_ITERATIONS):
    scale = max(np.abs(np.diag(hessian_KxK)).max(), 1.0)
    direction_K = -np.linalg.solve(
        hessian_KxK + 1e-12 * scale * np.eye(len(weights_K)), gradient_K)
    step, slope = 1.0, float(gradient_K @ direction_K)
    while True:
      candidate_K = weights_K + step * direction_K
      candidate_loss = _loss_gradient_hessian(
          candidate_K, terms_PxKxC, label_P, weight_P, False)[0]
      if candidate_loss <= loss + 1e-4 * step * slope or step < 1e-12:
        break
      step /= 2
    iterations += 1
    if step < 1e-12:  # no decrease left in float64: at the optimum
      break
    weights_K = candidate_K
    loss, gradient_K, hessian_KxK = _loss_gradient_hessian(
        weights_K, terms_PxKxC, label_P, weight_P)
  return Fit(tuple(float(w) for w in weights_K), float(loss), iterations,
             float(np.abs(gradient_K).max()), time.perf_counter() - begin)


def with_weights(state, weights):
  """`state` with the fusion's weights set to `weights` (a, b, c)."""
  params = dict(state.params)
  for name, value in zip(WEIGHTS, weights):
    params[name] = jax.numpy.asarray(value, params[name].dtype)
  return state.replace(params=type(state.params)(params)
                       if not isinstance(state.params, dict) else params)
