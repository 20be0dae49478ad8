"""Tests of the host pipeline: grain workers make the single-process batches."""

import itertools

import jax
import numpy as np
import pytest

from ctxtag import host_pipeline
from ctxtag import input_pipeline
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag import train
from ctxtag.configs import smoke


@pytest.fixture(scope="module")
def split(small_dataset_path):
  return input_pipeline.load_split(small_dataset_path, "train")


@pytest.mark.parametrize("kind", ["tracks", "pairs"])
def test_workers_make_the_single_process_batches_in_order(split, kind):
  per_epoch = input_pipeline.steps_per_epoch(split, kind, 8)
  start = per_epoch - 2  # mid-epoch, as a resumed run starts, then onwards
  count = 6  # across an epoch boundary
  want = itertools.islice(
      input_pipeline.train_batches(split, kind, 8, 5, start), count)
  got = itertools.islice(
      host_pipeline.train_batches(split, kind, 8, 5, start, workers=2,
                                  prefetch=2), count)
  for want_batch, got_batch in zip(want, got, strict=True):
    assert sorted(want_batch) == sorted(got_batch)
    for key, value in want_batch.items():
      np.testing.assert_array_equal(got_batch[key], value)


def test_step_indices_are_the_stream_of_train_indices(split):
  per_epoch = input_pipeline.steps_per_epoch(split, "pairs", 16)
  stream = input_pipeline.train_indices(split, "pairs", 16, seed=2)
  for step in range(2 * per_epoch + 1):
    np.testing.assert_array_equal(
        input_pipeline.step_indices(split, "pairs", 16, 2, step), next(stream))


def test_host_feed_with_workers_trains_as_without(split):
  name = "audio"
  config = smoke.get_config()
  kind, size = models.BATCH_KINDS[name], config[name].batch_size
  rng = jax.random.PRNGKey(1)
  states = []
  for workers in (0, 2):  # a fresh state each: a step donates its input
    steps, state = steps_lib.steps_and_state(name, config, split,
                                             jax.random.PRNGKey(0))
    feed = train.HostFeed(steps, split, kind, size, seed=3, start_step=1,
                          workers=workers, prefetch=2)
    trained, metrics = feed.run(steps.place(state), rng, 5)
    states.append((trained, [float(m["loss"]) for m in metrics]))
  (want, want_losses), (got, got_losses) = states
  # One jitted step, fed the same batches (the test above): the same
  # computation, so the same bits on any instruction set.
  assert got_losses == want_losses
  jax.tree.map(np.testing.assert_array_equal, got.params, want.params)


def test_bad_settings_are_refused(split):
  with pytest.raises(ValueError, match="workers must be >= 0"):
    host_pipeline.train_batches(split, "tracks", 8, 0, 0, -1, 2)
  with pytest.raises(ValueError, match="prefetch >= 1"):
    host_pipeline.train_batches(split, "tracks", 8, 0, 0, 2, 0)


def test_default_workers_leave_small_machines_alone(monkeypatch):
  for cores, workers in ((1, 0), (2, 0), (4, 1), (16, 7), (64, 8)):
    monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
    assert host_pipeline.default_workers() == workers
