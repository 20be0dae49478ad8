"""Shared fixtures: a tiny built dataset, made once per test session."""

import pytest

from launch import common


@pytest.fixture(scope="session")
def small_dataset_path(tmp_path_factory):
  """Versioned directory of contextual_tags/simulated_small, built for real."""
  data_dir = tmp_path_factory.mktemp("tfds")
  return common.build("contextual_tags/simulated_small", str(data_dir))
