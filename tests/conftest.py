"""Shared fixtures: a tiny built dataset, made once per test session."""

import pytest

from launch import common


@pytest.fixture(scope="session")
def small_dataset_path(tmp_path_factory):
  """Versioned directory of contextual_tags/simulated_small, built for real."""
  data_dir = tmp_path_factory.mktemp("tfds")
  return common.build("contextual_tags/simulated_small", str(data_dir))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """A workdir of the smoke reproduction (every model trained), made once."""
  from launch import reproduce  # pylint: disable=g-import-not-at-top
  from launch.configs import smoke  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("smoke_run"))
  reproduce.reproduce(smoke.get_config(), workdir)
  return workdir
