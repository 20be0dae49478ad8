"""Training: losses by hand, loss falls, exact resume, non-finite stop."""

import functools
import json
import os
import struct
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tensorboardX.proto import event_pb2

from ctxtag import input_pipeline
from ctxtag import models
from ctxtag import train
from launch.configs import smoke


def test_multi_label_loss_is_weighted_sigmoid_cross_entropy_by_hand():
  logits = np.array([[2.0, -1.0, 0.5]])
  targets = np.array([[1.0, 0.0, 1.0]])
  weights = np.array([3.0, 5.0, 0.5])
  sigmoid = 1 / (1 + np.exp(-logits))
  expected = np.mean(-weights * targets * np.log(sigmoid)
                     - (1 - targets) * np.log(1 - sigmoid))
  got = train.example_losses(logits, targets, weights, "multi_label")
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_single_label_loss_is_class_weighted_softmax_cross_entropy():
  logits = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
  targets = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  weights = np.array([4.0, 2.0, 1.0])
  softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  expected = [-2.0 * np.log(softmax[0, 1]), -4.0 * np.log(softmax[1, 0])]
  got = train.example_losses(logits, targets, weights, "single_label")
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_class_weights_are_examples_over_positives(small_dataset_path):
  split = input_pipeline.load_split(small_dataset_path, "train")
  pairs = train.class_weights(split, "pairs")
  counts = np.bincount(split.label_P, minlength=10)
  np.testing.assert_allclose(pairs, split.num_pairs / counts, rtol=1e-6)
  tracks = train.class_weights(split, "tracks")
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
  steps = train.Steps(np.ones(10, np.float32), models.OUTPUTS[name])
  state = steps.place(train.create_train_state(
      models.create_model(name, config[name]), config[name],
      jax.random.PRNGKey(0), batch))
  losses = []
  for _ in range(150):
    state, metrics = steps.train(state, steps.shard(batch),
                                 jax.random.PRNGKey(1))
    losses.append(float(metrics["loss"]))
  assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
  assert all(np.isfinite(losses))


def _params(workdir, name, config, dataset_path):
  _, state = train.restore_best(name, config, dataset_path, workdir)
  return jax.tree.leaves(jax.device_get(state.params))


@pytest.mark.parametrize("steps_per_dispatch", [1, 4])
def test_stopped_run_resumes_to_the_same_result(small_dataset_path, tmp_path,
                                                steps_per_dispatch):
  config = smoke.get_config()
  config.user.update(max_epochs=3, patience=10,
                     steps_per_dispatch=steps_per_dispatch)
  whole = train.train_and_evaluate("user", config, small_dataset_path,
                                   str(tmp_path / "whole"))

  config.user.max_epochs = 1
  parted = str(tmp_path / "parted")
  train.train_and_evaluate("user", config, small_dataset_path, parted)
  os.remove(os.path.join(parted, "user", "summary.json"))  # "killed"
  config.user.max_epochs = 3
  resumed = train.train_and_evaluate("user", config, small_dataset_path,
                                     parted)
  assert resumed["history"] == whole["history"]
  for a, b in zip(_params(str(tmp_path / "whole"), "user", config,
                          small_dataset_path),
                  _params(parted, "user", config, small_dataset_path)):
    np.testing.assert_array_equal(a, b)
  log = [json.loads(line) for line in open(
      os.path.join(parted, "user", "metrics.jsonl"))]
  assert [r["step"] for r in log if r["kind"] == "epoch"] == [
      h["step"] for h in whole["history"]]
  scalars = _tensorboard_scalars(os.path.join(parted, "user", "tensorboard"))
  assert [step for step, _ in scalars["epoch/validation_loss"]] == [
      h["step"] for h in whole["history"]]
  np.testing.assert_allclose(
      [value for _, value in scalars["epoch/validation_loss"]],
      [h["validation_loss"] for h in whole["history"]], rtol=1e-6)
  assert {"train/loss", "train/grad_norm", "train/param_norm"} <= set(scalars)


def _tensorboard_scalars(directory):
  """{tag: [(step, value)]} from the event files, read record by record
  (length, crc, event proto, crc) with no TensorFlow."""
  scalars = {}
  for name in sorted(os.listdir(directory)):
    data = open(os.path.join(directory, name), "rb").read()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(
          data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append(
            (event.step, value.simple_value))
  return scalars


def test_finished_run_is_reused(small_dataset_path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a relative workdir works too
  config = smoke.get_config()
  first = train.train_and_evaluate("user", config, small_dataset_path, "run")
  assert os.path.isdir(tmp_path / "run" / "user" / "checkpoints" / "best")
  config.user.max_epochs = 50  # would train much longer if not reused
  assert train.train_and_evaluate("user", config, small_dataset_path,
                                  "run") == first


def test_early_stopping_keeps_the_best_checkpoint(small_dataset_path,
                                                  tmp_path):
  config = smoke.get_config()
  config.user.update(max_epochs=30, patience=2, learning_rate=1e-2)
  summary = train.train_and_evaluate("user", config, small_dataset_path,
                                     str(tmp_path))
  history = summary["history"]
  best = min(history, key=lambda h: h["validation_loss"])
  assert summary["best_epoch"] == best["epoch"]
  assert summary["stopped_early"] and len(history) < 30
  assert len(history) - summary["best_epoch"] == 2
  _, state = train.restore_best("user", config, small_dataset_path,
                                str(tmp_path))
  assert int(state.step) == best["step"]


def test_non_finite_loss_stops_with_a_clear_error(small_dataset_path,
                                                  tmp_path, monkeypatch):
  config = smoke.get_config()
  config.user.max_epochs = 1
  train.train_and_evaluate("user", config, small_dataset_path, str(tmp_path))
  os.remove(tmp_path / "user" / "summary.json")
  good_step = train.Checkpoints(
      str(tmp_path / "user" / "checkpoints")).latest.latest_step()

  monkeypatch.setattr(train, "example_losses",
                      lambda logits, *args: jnp.full(logits.shape[0], jnp.nan))
  config.user.max_epochs = 2
  with pytest.raises(FloatingPointError, match="non-finite training loss"):
    train.train_and_evaluate("user", config, small_dataset_path,
                             str(tmp_path))
  kept = train.Checkpoints(str(tmp_path / "user" / "checkpoints"))
  assert kept.latest.latest_step() == good_step


def test_steps_on_a_device_mesh_match_one_device():
  # Four CPU devices need a fresh process: the device count is fixed when
  # JAX starts.
  script = textwrap.dedent("""
      import sys, jax, numpy as np
      from ctxtag import models, train
      from launch.configs import smoke
      config = smoke.get_config()
      rng = np.random.default_rng(0)
      batch = {"mel": rng.normal(size=(8, 16, 96)).astype(np.float32),
               "user_embedding": rng.normal(size=(8, 256)).astype(np.float32),
               "labels": np.eye(10, dtype=np.float32)[rng.integers(0, 10, 8)],
               "mask": np.ones(8, np.float32)}
      steps = train.Steps(np.ones(10, np.float32), "single_label")
      state = steps.place(train.create_train_state(
          models.create_model("audio_user", config.audio_user),
          config.audio_user, jax.random.PRNGKey(0), batch))
      losses = []
      for _ in range(3):
        state, metrics = steps.train(state, steps.shard(batch),
                                     jax.random.PRNGKey(1))
        losses.append(float(metrics["loss"]))
      # The device-resident path: tables replicated, indices sharded, two
      # steps per dispatch.
      steps = train.Steps(np.ones(10, np.float32), "single_label", "pairs")
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
  steps, state = train.steps_and_state(name, config, split,
                                       jax.random.PRNGKey(0))
  return config, steps, steps.place(state)


# Two paths, two XLA programs: the host path feeds a batch, the resident path
# gathers it inside the step. What they must share is the data and its order,
# bit for bit; their arithmetic is compiled separately, and XLA:CPU picks its
# kernels (and so the order of each reduction) by instruction set, so the
# results agree to float32 rounding only. A float32 sum of n terms in another
# order moves by at most ~n * 2^-24 relative; over a few training steps on
# the smoke model that stays far inside these bounds (measured with AVX, AVX2
# and AVX-512: losses within 1e-7 relative, parameters within 3e-8), while a
# wrong batch or step moves losses by more than 1e-2.
STEP_RTOL = 1e-5
PARAM_RTOL, PARAM_ATOL = 1e-4, 1e-6


@pytest.mark.parametrize("name", ["audio", "audio_user", "user"])
def test_resident_tables_gather_the_host_batches(small_dataset_path, name):
  split = input_pipeline.load_split(small_dataset_path, "train")
  kind = models.BATCH_KINDS[name]
  config, steps, _ = _small_state(name, split)
  size = config[name].batch_size
  tables = steps.place_tables(split, kind)
  gather = jax.jit(input_pipeline.gather_batch, static_argnames="kind")
  host_batches = input_pipeline.train_batches(split, kind, size, seed=3)
  per_epoch = input_pipeline.steps_per_epoch(split, kind, size)
  for step in range(per_epoch + 2):  # across an epoch boundary
    host_batch = next(host_batches)
    indices = input_pipeline.step_indices(split, kind, size, 3, step)
    np.testing.assert_array_equal(host_batch["index"], indices)
    gathered = jax.device_get(gather(tables, indices, kind=kind))
    assert sorted(gathered) == sorted(
        set(host_batch) - {"mask", "index"})
    for key, value in gathered.items():
      assert value.dtype == host_batch[key].dtype, key
      np.testing.assert_array_equal(value, host_batch[key])


@pytest.mark.parametrize("name", ["audio", "audio_user", "user"])
def test_device_resident_steps_equal_host_steps(small_dataset_path, name):
  split = input_pipeline.load_split(small_dataset_path, "train")
  kind = models.BATCH_KINDS[name]
  config, steps, host_state = _small_state(name, split)
  _, _, state = _small_state(name, split)
  size, rng = config[name].batch_size, jax.random.PRNGKey(1)
  host = train.HostFeed(steps, split, kind, size, seed=3, start_step=0)
  device = train.ResidentFeed(steps, steps.place_tables(split, kind), split,
                              kind, size, seed=3, start_step=0)
  host_losses, device_losses = [], []
  for count in (1, 1, 3, 2):  # one step a dispatch, then several
    host_state, metrics = host.run(host_state, rng, count)
    host_losses.extend(float(m["loss"]) for m in metrics)
    state, (metrics,) = device.run(state, rng, count)
    device_losses.extend(np.asarray(metrics["loss"]).tolist())
    np.testing.assert_allclose(device_losses, host_losses, rtol=STEP_RTOL)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=PARAM_RTOL,
                                 atol=PARAM_ATOL),
               jax.device_get(state.params), jax.device_get(host_state.params))
  assert int(state.step) == int(host_state.step) == 7


def test_pair_model_evaluation_computes_audio_once_per_track(
    small_dataset_path):
  split = input_pipeline.load_split(small_dataset_path, "validation")
  _, steps, state = _small_state("audio_user", split)
  per_pair = []  # the whole model on every pair's mel
  for batch in input_pipeline.eval_batches(split, "pairs", 32):
    scores = np.asarray(steps.predict(state, steps.shard(batch)))
    per_pair.append(scores[batch["mask"] == 1])
  per_pair = np.concatenate(per_pair)
  for tables in (None, steps.place_tables(split, "pairs")):
    scores = train.predict(steps, state, split, "pairs", 32, tables)
    np.testing.assert_allclose(scores, per_pair, rtol=1e-5, atol=1e-6)
  weights = train.class_weights(split, "pairs")
  expected = np.mean(train.example_losses(
      np.log(per_pair), split.pair_labels_PxC, weights, "single_label"))
  np.testing.assert_allclose(
      train.validation_loss(steps, state, split, "pairs", 32), expected,
      rtol=1e-5)


def test_device_resident_predictions_equal_host_predictions(
    small_dataset_path):
  split = input_pipeline.load_split(small_dataset_path, "validation")
  for name in ("audio", "audio_user", "user"):
    kind = models.BATCH_KINDS[name]
    config, steps, state = _small_state(name, split)
    host = train.predict(steps, state, split, kind, config.eval_batch_size)
    device = train.predict(steps, state, split, kind, config.eval_batch_size,
                           steps.place_tables(split, kind))
    assert host.shape == (input_pipeline.num_examples(split, kind), 10)
    np.testing.assert_allclose(device, host, rtol=1e-6, atol=1e-7)
    host_loss = train.validation_loss(steps, state, split, kind, 32)
    device_loss = train.validation_loss(steps, state, split, kind, 32,
                                        steps.place_tables(split, kind))
    np.testing.assert_allclose(device_loss, host_loss, rtol=1e-6)


def test_host_batches_and_device_tables_train_the_same_model(
    small_dataset_path, tmp_path):
  # The same batches in the same order (test_resident_tables_gather_the_host
  # _batches), two compiled programs: equal to float32 rounding, see
  # STEP_RTOL (measured over these two epochs: 2e-9 relative on the losses
  # with AVX-512, 0 with AVX), far below what one wrong batch would do.
  config = smoke.get_config()
  config.audio_user.max_epochs = 2
  device = train.train_and_evaluate("audio_user", config, small_dataset_path,
                                    str(tmp_path / "device"))
  config.audio_user.device_data_budget_mb = 0  # nothing fits: host batches
  host = train.train_and_evaluate("audio_user", config, small_dataset_path,
                                  str(tmp_path / "host"))
  _assert_same_history(device["history"], host["history"], rtol=1e-5)
  assert device["best_epoch"] == host["best_epoch"]
  for a, b in zip(_params(str(tmp_path / "device"), "audio_user", config,
                          small_dataset_path),
                  _params(str(tmp_path / "host"), "audio_user", config,
                          small_dataset_path), strict=True):
    np.testing.assert_allclose(a, b, rtol=PARAM_RTOL, atol=PARAM_ATOL)


def _assert_same_history(got, want, rtol):
  """Epoch records equal in every count and to `rtol` in every float."""
  assert len(got) == len(want)
  for got_epoch, want_epoch in zip(got, want):
    assert sorted(got_epoch) == sorted(want_epoch)
    for key, value in want_epoch.items():
      if isinstance(value, float):
        np.testing.assert_allclose(got_epoch[key], value, rtol=rtol,
                                   err_msg=key)
      else:
        assert got_epoch[key] == value, key


def test_bfloat16_training_keeps_float32_state(small_dataset_path, tmp_path):
  config = smoke.get_config()
  config.audio.update(compute_dtype="bfloat16", max_epochs=1)
  summary = train.train_and_evaluate("audio", config, small_dataset_path,
                                     str(tmp_path))
  assert np.isfinite(summary["best_validation_loss"])
  _, state = train.restore_best("audio", config, small_dataset_path,
                                str(tmp_path))
  dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {np.dtype(np.float32)}
