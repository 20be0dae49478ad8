"""Device-resident tables: their bytes, and batches gathered from them equal
the host batches bit for bit."""

import itertools

import jax
import numpy as np
import pytest

from ctxtag import device_data
from ctxtag import input_pipeline
from ctxtag import models
from ctxtag import steps as steps_lib
from ctxtag.configs import smoke


@pytest.fixture(scope="module")
def train(small_dataset_path):
  return input_pipeline.load_split(small_dataset_path, "train")


@pytest.mark.parametrize("kind", ["tracks", "pairs", "users"])
def test_device_gathered_batches_equal_host_batches(train, kind):
  tables = {field: device_data.resident_array(train, field)
            for field in device_data.resident_fields(kind)}
  assert device_data.resident_bytes(train, kind) == sum(
      table.nbytes for table in tables.values())
  indices = iter(input_pipeline.train_indices(train, kind, 8, seed=4))
  for batch in itertools.islice(
      input_pipeline.train_batches(train, kind, 8, seed=4), 3):
    index = next(indices)
    np.testing.assert_array_equal(index, batch["index"])
    gathered = jax.jit(device_data.gather_batch, static_argnums=2)(
        tables, index, kind)
    assert set(gathered) == set(batch) - {"mask", "index"}
    for key, value in gathered.items():
      assert value.dtype == batch[key].dtype
      np.testing.assert_array_equal(value, batch[key])


@pytest.mark.parametrize("name", ["audio", "audio_user", "user"])
def test_resident_tables_gather_the_host_batches(small_dataset_path, name):
  split = input_pipeline.load_split(small_dataset_path, "train")
  kind = models.BATCH_KINDS[name]
  steps = steps_lib.model_steps(name, split)
  size = smoke.get_config()[name].batch_size
  tables = device_data.place_tables(split, kind, steps.replicated)
  gather = jax.jit(device_data.gather_batch, static_argnames="kind")
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
