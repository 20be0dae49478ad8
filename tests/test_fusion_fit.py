"""The frozen late fusion's exact fit (ctxtag.fusion_fit): Newton's optimum
against brute-force minimisation and finite differences, the experts'
terms against the module's own logits, and training that is the fit."""

import json
import os

import jax
import numpy as np
import pytest
from scipy import optimize

from ctxtag import fusion_fit
from ctxtag import input_pipeline
from ctxtag import steps as steps_lib
from ctxtag import train
from ctxtag import transfer
from tests import test_transfer


def _problem(seed=0, pairs=3000, contexts=10):
  """Terms, labels and class weights of a fusion whose labels are drawn
  from the logits of known weights, so the optimum is finite."""
  rng = np.random.default_rng(seed)
  terms = rng.normal(size=(pairs, 3, contexts))
  terms[:, 2] = rng.normal(size=contexts)  # the prior: one row for all
  logits = np.einsum("pkc,k->pc", terms, [0.8, 1.2, 0.3])
  probs = np.exp(logits - logits.max(axis=1, keepdims=True))
  probs /= probs.sum(axis=1, keepdims=True)
  labels = np.array([rng.choice(contexts, p=p) for p in probs])
  counts = np.bincount(labels, minlength=contexts)
  return terms, labels, pairs / counts


def _loss(weights, terms, labels, class_weights):
  """The loss by hand: log-softmax picked at each label, weighted."""
  logits = np.einsum("pkc,k->pc", terms, weights)
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return -np.mean(class_weights[labels]
                  * log_probs[np.arange(len(labels)), labels])


def test_newton_reaches_the_brute_force_minimum():
  terms, labels, class_weights = _problem()
  fit = fusion_fit.newton_fit(terms, labels, class_weights)
  assert fit.gradient_norm < 1e-9 and fit.iterations < 20
  assert fit.loss == pytest.approx(
      _loss(fit.weights, terms, labels, class_weights), rel=1e-12)
  brute = optimize.minimize(
      _loss, x0=np.zeros(3), args=(terms, labels, class_weights),
      method="Nelder-Mead",
      options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 20000})
  np.testing.assert_allclose(fit.weights, brute.x, atol=1e-5)
  assert fit.loss <= brute.fun + 1e-12
  # Nothing on a grid around it is lower.
  grid = np.linspace(-2e-3, 2e-3, 5)
  for da in grid:
    for db in grid:
      for dc in grid:
        assert _loss(np.add(fit.weights, [da, db, dc]), terms, labels,
                     class_weights) >= fit.loss - 1e-12


def test_gradient_and_hessian_are_the_losss_derivatives():
  terms, labels, class_weights = _problem(seed=1, pairs=500)
  weights = np.array([0.3, -0.7, 1.1])
  example = class_weights[labels]
  loss, gradient, hessian = fusion_fit._loss_gradient_hessian(  # pylint: disable=protected-access
      weights, terms, labels, example)
  assert loss == pytest.approx(_loss(weights, terms, labels, class_weights))
  step = 1e-5
  for k in range(3):
    shift = np.eye(3)[k] * step
    up = fusion_fit._loss_gradient_hessian(weights + shift, terms, labels,  # pylint: disable=protected-access
                                           example)
    down = fusion_fit._loss_gradient_hessian(weights - shift, terms, labels,  # pylint: disable=protected-access
                                             example)
    assert gradient[k] == pytest.approx((up[0] - down[0]) / (2 * step),
                                        rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(hessian[k], (up[1] - down[1]) / (2 * step),
                               rtol=1e-5, atol=1e-8)
  assert np.all(np.linalg.eigvalsh(hessian) >= -1e-12)  # convex


def test_a_term_zero_on_every_pair_keeps_its_start_and_fits_the_rest():
  terms, labels, class_weights = _problem(seed=2, pairs=1000)
  terms[:, 1] = 0.0  # a user expert that says nothing
  fit = fusion_fit.newton_fit(terms, labels, class_weights,
                              start=(1.0, 1.0, 0.0))
  assert fit.weights[1] == pytest.approx(1.0, abs=1e-9)
  two = optimize.minimize(
      lambda ac: _loss([ac[0], 0.0, ac[1]], terms, labels, class_weights),
      x0=np.zeros(2), method="Nelder-Mead",
      options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 20000})
  np.testing.assert_allclose([fit.weights[0], fit.weights[2]], two.x,
                             atol=1e-5)


@pytest.mark.slow
def test_the_terms_give_the_modules_logits(smoke_run, tmp_path):
  config, dataset_path = test_transfer._late_fusion_run(  # pylint: disable=protected-access
      smoke_run, tmp_path)
  split = input_pipeline.load_split(dataset_path, "validation")
  train_split = input_pipeline.load_split(dataset_path, "train")
  steps, state = steps_lib.steps_and_state(
      "audio_user", config, train_split, jax.random.PRNGKey(0))
  state = steps.place(transfer.with_trained_parts(
      state, "audio_user", config, str(tmp_path), split.mel_shape[0]))
  terms = fusion_fit.expert_terms(steps, state, split, 32)
  assert terms.shape == (split.num_pairs, 3, 10)
  weights = (0.7, 1.3, -0.4)
  state = steps.place(fusion_fit.with_weights(state, weights))
  probs = steps_lib.predict(steps, state, split, "pairs", 32)
  logits = np.einsum("pkc,k->pc", terms, weights)
  expected = np.exp(logits - logits.max(axis=1, keepdims=True))
  expected /= expected.sum(axis=1, keepdims=True)
  np.testing.assert_allclose(probs, expected, atol=2e-6)


@pytest.mark.slow
def test_frozen_fusion_training_is_the_exact_fit_and_reruns_alike(
    smoke_run, tmp_path):
  workdir = str(tmp_path)
  config, dataset_path = test_transfer._late_fusion_run(  # pylint: disable=protected-access
      smoke_run, tmp_path)
  summary = train.train_and_evaluate("audio_user", config, dataset_path,
                                     workdir)
  fit = summary["fit"]
  assert fit["method"] == "newton" and fit["gradient_norm"] < 1e-9
  assert (summary["epochs"], summary["best_epoch"], summary["best_step"],
          summary["stopped_early"]) == (1, 1, 1, False)
  assert len(summary["history"]) == 1
  split = input_pipeline.load_split(dataset_path, "validation")
  params = transfer.restore_best("audio_user", config, workdir,
                                 split.mel_shape[0]).params
  restored = [float(params[w]) for w in fusion_fit.WEIGHTS]
  np.testing.assert_allclose(restored, list(fit["weights"].values()),
                             rtol=1e-6)
  # The evaluated loss (float32 steps) is the fit's (float64) at the weights.
  assert summary["best_validation_loss"] == pytest.approx(fit["loss"],
                                                          rel=1e-5)
  # A fit stopped after its checkpoints but before its summary is redone
  # alike: its saves are replaced, not clashed with.
  os.remove(os.path.join(workdir, "audio_user", "summary.json"))
  again = train.train_and_evaluate("audio_user", config, dataset_path,
                                   workdir)
  assert again["fit"]["weights"] == fit["weights"]
  with open(os.path.join(workdir, "audio_user", "summary.json")) as f:
    assert json.load(f)["fit"]["weights"] == fit["weights"]
