"""Training: exact resume, early stopping, non-finite stop, both feeds."""

import functools
import json
import os
import struct
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tensorboardX.proto import event_pb2

from ctxtag import checkpoints as checkpoints_lib
from ctxtag import device_data
from ctxtag import input_pipeline
from ctxtag import loop as loop_lib
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag import train
from ctxtag import transfer
from ctxtag.configs import smoke


def _best_state(name, config, dataset_path, workdir):
  frames = input_pipeline.load_split(dataset_path, "train").mel_shape[0]
  return transfer.restore_best(name, config, workdir, frames)


def _params(workdir, name, config, dataset_path):
  state = _best_state(name, config, dataset_path, workdir)
  return jax.tree.leaves(jax.device_get(state.params))


@pytest.mark.slow
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


@pytest.mark.slow
def test_finished_run_is_reused(small_dataset_path, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a relative workdir works too
  config = smoke.get_config()
  first = train.train_and_evaluate("user", config, small_dataset_path, "run")
  assert os.path.isdir(tmp_path / "run" / "user" / "checkpoints" / "best")
  config.user.max_epochs = 50  # would train much longer if not reused
  assert train.train_and_evaluate("user", config, small_dataset_path,
                                  "run") == first


@pytest.mark.slow
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
  state = _best_state("user", config, small_dataset_path, str(tmp_path))
  assert int(state.step) == best["step"]


@pytest.mark.slow
def test_non_finite_loss_stops_with_a_clear_error(small_dataset_path,
                                                  tmp_path, monkeypatch):
  config = smoke.get_config()
  config.user.max_epochs = 1
  train.train_and_evaluate("user", config, small_dataset_path, str(tmp_path))
  os.remove(tmp_path / "user" / "summary.json")
  good_step = checkpoints_lib.Checkpoints(
      str(tmp_path / "user" / "checkpoints")).latest.latest_step()

  monkeypatch.setattr(steps_lib, "example_losses",
                      lambda logits, *args: jnp.full(logits.shape[0], jnp.nan))
  config.user.max_epochs = 2
  with pytest.raises(FloatingPointError, match="non-finite training loss"):
    train.train_and_evaluate("user", config, small_dataset_path,
                             str(tmp_path))
  kept = checkpoints_lib.Checkpoints(str(tmp_path / "user" / "checkpoints"))
  assert kept.latest.latest_step() == good_step


def _small_state(name, split):
  config = smoke.get_config()
  steps, state = steps_lib.steps_and_state(name, config, split,
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
def test_device_resident_steps_equal_host_steps(small_dataset_path, name):
  split = input_pipeline.load_split(small_dataset_path, "train")
  kind = models.BATCH_KINDS[name]
  config, steps, host_state = _small_state(name, split)
  _, _, state = _small_state(name, split)
  size, rng = config[name].batch_size, jax.random.PRNGKey(1)
  host = train.HostFeed(steps, split, kind, size, seed=3, start_step=0)
  device = train.ResidentFeed(
      steps, device_data.place_tables(split, kind, steps.replicated), split,
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


def test_short_dispatches_are_padded_to_one_compiled_program(
    small_dataset_path):
  split = input_pipeline.load_split(small_dataset_path, "train")
  config, steps, host_state = _small_state("user", split)
  _, _, state = _small_state("user", split)
  size, rng = config.user.batch_size, jax.random.PRNGKey(1)
  host = train.HostFeed(steps, split, "users", size,
                        seed=3, start_step=0)
  device = train.ResidentFeed(
      steps, device_data.place_tables(split, "users", steps.replicated),
      split, "users", size, seed=3, start_step=0, dispatch=4)
  host_losses, device_losses = [], []
  for count in (3, 4, 1, 2):  # an epoch's end is a shorter dispatch
    host_state, metrics = host.run(host_state, rng, count)
    host_losses.extend(float(m["loss"]) for m in metrics)
    state, (metrics,) = device.run(state, rng, count)
    assert np.asarray(metrics["loss"]).shape == (count,)
    device_losses.extend(np.asarray(metrics["loss"]).tolist())
  np.testing.assert_allclose(device_losses, host_losses, rtol=STEP_RTOL)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=PARAM_RTOL,
                                 atol=PARAM_ATOL),
               jax.device_get(state.params), jax.device_get(host_state.params))
  assert int(state.step) == int(host_state.step) == 10  # padding skipped
  assert steps._train_indexed._cache_size() == 1  # pylint: disable=protected-access


@pytest.mark.slow
def test_host_batches_and_device_tables_train_the_same_model(
    small_dataset_path, tmp_path):
  # The same batches in the same order (test_device_data's
  # test_resident_tables_gather_the_host_batches), two compiled programs:
  # equal to float32 rounding, see STEP_RTOL (measured over these two
  # epochs: 2e-9 relative on the losses with AVX-512, 0 with AVX), far below
  # what one wrong batch would do.
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


@pytest.mark.slow
def test_bfloat16_training_keeps_float32_state(small_dataset_path, tmp_path):
  config = smoke.get_config()
  config.audio.update(compute_dtype="bfloat16", max_epochs=1)
  summary = train.train_and_evaluate("audio", config, small_dataset_path,
                                     str(tmp_path))
  assert np.isfinite(summary["best_validation_loss"])
  state = _best_state("audio", config, small_dataset_path, str(tmp_path))
  dtypes = {x.dtype for x in jax.tree.leaves((state.params, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert dtypes == {np.dtype(np.float32)}


class _CountingFeed:
  """One step adds 1 to the state; its loss is the state before it."""

  def run(self, state, rng, count):
    del rng
    return state + count, [{"loss": np.float32(state + i)}
                           for i in range(count)]


@pytest.mark.parametrize("every_seconds,shown_steps", [
    (0.0, [2, 3, 4, 5]),  # every dispatch without a logged line
    (1e9, []),  # lines only at logging steps
])
def test_slow_steps_still_show_a_line_now_and_then(every_seconds,
                                                   shown_steps):
  logged, shown = [], []
  runner = loop_lib.EpochRunner(
      _CountingFeed(), None, 1, 1000, progress=types.SimpleNamespace(
          record_and_print=lambda s, v: logged.append(s),
          print_line=lambda s, v: shown.append((s, v["loss"]))),
      line_every_seconds=every_seconds)
  state, losses = loop_lib.train_epoch(runner, 0, 0, 5)
  assert state == 5 and losses == [0, 1, 2, 3, 4]
  assert logged == [1]  # records only at logging steps, whatever is shown
  assert shown == [(s, s - 1) for s in shown_steps]
