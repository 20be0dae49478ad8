"""Steps: losses by hand, class weights, loss falls, one device equals a
mesh, and whole-split passes equal on host batches and device tables."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from ctxtag import device_data
from ctxtag import input_pipeline
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag.configs import default
from ctxtag.configs import smoke


def test_multi_label_loss_is_weighted_sigmoid_cross_entropy_by_hand():
  logits = np.array([[2.0, -1.0, 0.5]])
  targets = np.array([[1.0, 0.0, 1.0]])
  weights = np.array([3.0, 5.0, 0.5])
  sigmoid = 1 / (1 + np.exp(-logits))
  expected = np.mean(-weights * targets * np.log(sigmoid)
                     - (1 - targets) * np.log(1 - sigmoid))
  got = steps_lib.example_losses(logits, targets, weights, "multi_label")
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_single_label_loss_is_class_weighted_softmax_cross_entropy():
  logits = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
  targets = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  weights = np.array([4.0, 2.0, 1.0])
  softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  expected = [-2.0 * np.log(softmax[0, 1]), -4.0 * np.log(softmax[1, 0])]
  got = steps_lib.example_losses(logits, targets, weights, "single_label")
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_class_weights_are_examples_over_positives(small_dataset_path):
  split = input_pipeline.load_split(small_dataset_path, "train")
  pairs = steps_lib.class_weights(split, "pairs")
  counts = np.bincount(split.label_P, minlength=10)
  np.testing.assert_allclose(pairs, split.num_pairs / counts, rtol=1e-6)
  tracks = steps_lib.class_weights(split, "tracks")
  union = np.zeros((split.num_tracks, 10))
  for track, label in zip(split.pair_track_P, split.label_P):
    union[track, label] = 1
  np.testing.assert_allclose(tracks, split.num_tracks / union.sum(0),
                             rtol=1e-6)


@pytest.mark.parametrize("name", ["audio", "audio_user", "user"])
def test_loss_falls_on_a_learnable_toy_problem(name):
  # The label is a fixed function of the user embedding (user models) or of
  # which half of the mel is loud (audio model): all are learnable.
  config = smoke.get_config()
  config[name].update(learning_rate=3e-3, dropout_rate=0.0)
  rng = np.random.default_rng(0)
  embedding = rng.normal(size=(64, 256)).astype(np.float32)
  label = (embedding[:, :10].argmax(axis=1) if name != "audio"
           else rng.integers(0, 2, size=64))
  mel = rng.uniform(size=(64, 16, 96)).astype(np.float32)
  mel[:, :, :48] += 2.0 * (label[:, None, None] % 2)
  one_hot = np.eye(10, dtype=np.float32)[label]
  batch = {"mel": mel, "user_embedding": embedding, "labels": one_hot,
           "mask": np.ones(64, np.float32)}
  steps = steps_lib.Steps(np.ones(10, np.float32), models.OUTPUTS[name])
  state = steps.place(steps_lib.create_train_state(
      models.create_model(name, config[name]), config[name],
      jax.random.PRNGKey(0), batch))
  losses = []
  for _ in range(150):
    state, metrics = steps.train(state, steps.shard(batch),
                                 jax.random.PRNGKey(1))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
  assert all(np.isfinite(losses))


@pytest.mark.parametrize("name", ["audio", "audio_user", "user"])
def test_a_fresh_state_has_the_bits_of_a_default_compilation(name):
  # create_train_state compiles its program at a low LLVM optimisation level
  # (quick to compile); the state must be the one XLA's default level gives,
  # or the change would move every figure.
  config = default.get_config()
  model = models.create_model(name, config[name])
  batch = {"mel": np.zeros((1, 65, 96), np.float32),
           "user_embedding": np.zeros((1, 256), np.float32)}
  rng = jax.random.PRNGKey(7)
  state = steps_lib.create_train_state(model, config[name], rng, batch)
  tx = steps_lib.make_optimizer(config[name])
  variables = jax.jit(lambda r, b: model.init(r, b, train=False))(rng, batch)
  expected = (variables["params"], variables.get("batch_stats", {}),
              jax.jit(tx.init)(variables["params"]))
  got = (state.params, state.batch_stats, state.opt_state)
  assert (jax.tree_util.tree_structure(got)
          == jax.tree_util.tree_structure(expected))
  for got_leaf, expected_leaf in zip(jax.tree_util.tree_leaves(got),
                                     jax.tree_util.tree_leaves(expected)):
    assert got_leaf.dtype == expected_leaf.dtype
    np.testing.assert_array_equal(got_leaf, expected_leaf)
  assert state.step == 0


@pytest.mark.slow
def test_steps_on_a_device_mesh_match_one_device():
  # Four CPU devices need a fresh process: the device count is fixed when
  # JAX starts.
  script = textwrap.dedent("""
      import sys, jax, numpy as np
      from ctxtag import models, steps as steps_lib
      from ctxtag.configs import smoke
      config = smoke.get_config()
      rng = np.random.default_rng(0)
      batch = {"mel": rng.normal(size=(8, 16, 96)).astype(np.float32),
               "user_embedding": rng.normal(size=(8, 256)).astype(np.float32),
               "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)],
               "mask": np.ones(8, np.float32)}
      steps = steps_lib.Steps(np.ones(10, np.float32), "single_label")
      state = steps.place(steps_lib.create_train_state(
          models.create_model("audio_user", config.audio_user),
          config.audio_user, jax.random.PRNGKey(0), batch))
      losses = []
      for _ in range(3):
        state, metrics = steps.train(state, steps.shard(batch),
                                     jax.random.PRNGKey(1))
        losses.append(float(metrics["loss"]))
      # The device-resident path: tables replicated, indices sharded, two
      # steps per dispatch.
      steps = steps_lib.Steps(np.ones(10, np.float32), "single_label",
                              "pairs")
      tables = {"mel_NxTxF": batch["mel"].astype(np.float16),
                "pair_track_P": np.arange(8, dtype=np.int32),
                "user_embedding_PxE": batch["user_embedding"],
                "pair_labels_PxC": batch["labels"]}
      tables = {k: jax.device_put(v, steps.replicated)
                for k, v in tables.items()}
      indices = np.array([[3, 1, 4, 1, 5, 0, 2, 6], [7, 7, 0, 1, 2, 3, 4, 5]])
      state, metrics = steps.train_indexed(
          state, tables, steps.shard_indices(indices), jax.random.PRNGKey(1))
      losses.extend(float(x) for x in metrics["loss"])
      print(jax.device_count(), *losses)
  """)
  outputs = []
  for devices in (1, 4):
    env = dict(os.environ, XLA_FLAGS=(
        f"--xla_force_host_platform_device_count={devices}"),
               JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", script], env=env,
                            capture_output=True, text=True, check=True,
                            cwd=os.path.dirname(os.path.dirname(
                                os.path.abspath(__file__))))
    outputs.append([float(x) for x in result.stdout.split()])
  assert outputs[0][0] == 1 and outputs[1][0] == 4
  np.testing.assert_allclose(outputs[0][1:], outputs[1][1:], rtol=1e-4)


def _small_state(name, split):
  config = smoke.get_config()
  steps, state = steps_lib.steps_and_state(name, config, split,
                                           jax.random.PRNGKey(0))
  return config, steps, steps.place(state)


def test_pair_model_evaluation_computes_audio_once_per_track(
    small_dataset_path):
  split = input_pipeline.load_split(small_dataset_path, "validation")
  _, steps, state = _small_state("audio_user", split)
  per_pair = []  # the whole model on every pair's mel
  for batch in input_pipeline.eval_batches(split, "pairs", 32):
    scores = np.asarray(steps.predict(state, steps.shard(batch)))
    per_pair.append(scores[batch["mask"] == 1])
  per_pair = np.concatenate(per_pair)
  for tables in (None, device_data.place_tables(split, "pairs",
                                                steps.replicated)):
    scores = steps_lib.predict(steps, state, split, "pairs", 32, tables)
    np.testing.assert_allclose(scores, per_pair, rtol=1e-5, atol=1e-6)
  weights = steps_lib.class_weights(split, "pairs")
  expected = np.mean(steps_lib.example_losses(
      np.log(per_pair), split.pair_labels_PxC, weights, "single_label"))
  np.testing.assert_allclose(
      steps_lib.validation_loss(steps, state, split, "pairs", 32), expected,
      rtol=1e-5)


def test_device_resident_predictions_equal_host_predictions(
    small_dataset_path):
  split = input_pipeline.load_split(small_dataset_path, "validation")
  for name in ("audio", "audio_user", "user"):
    kind = models.BATCH_KINDS[name]
    config, steps, state = _small_state(name, split)
    tables = device_data.place_tables(split, kind, steps.replicated)
    host = steps_lib.predict(steps, state, split, kind,
                             config.eval_batch_size)
    device = steps_lib.predict(steps, state, split, kind,
                               config.eval_batch_size, tables)
    assert host.shape == (input_pipeline.num_examples(split, kind), 10)
    np.testing.assert_allclose(device, host, rtol=1e-6, atol=1e-7)
    host_loss = steps_lib.validation_loss(steps, state, split, kind, 32)
    device_loss = steps_lib.validation_loss(steps, state, split, kind, 32,
                                            tables)
    np.testing.assert_allclose(device_loss, host_loss, rtol=1e-6)
