"""Shared fixtures (a tiny built dataset, a smoke run, each made once per
test session), the `slow` marker's rule, and the compilation cache."""

import pytest

from ctxtag import compilation_cache
from ctxtag import datasets
from ctxtag import run

# Before any test compiles: the programs every test process compiles alike
# (the smoke models' init and steps) are compiled once across processes and
# sessions, as the launchers do (ctxtag.compilation_cache).
compilation_cache.enable()


@pytest.fixture(scope="session")
def small_dataset_path(tmp_path_factory):
  """Versioned directory of contextual_tags/simulated_small, built for real."""
  data_dir = tmp_path_factory.mktemp("tfds")
  return datasets.build("contextual_tags/simulated_small", str(data_dir))


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
  """A workdir of the smoke reproduction (every model trained), made once."""
  from ctxtag.configs import smoke  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("smoke_run"))
  run.reproduce(smoke.get_config(), workdir)
  return workdir


# A test that asks for a built dataset or a trained run builds or trains
# (once per session, but a fast loop should not pay for it at all).
_SLOW_FIXTURES = {"small_dataset_path", "smoke_run"}


def pytest_collection_modifyitems(items):
  """Marks `slow` every test that uses a slow fixture; tests that start
  subprocesses, build or train in their own body carry the mark themselves."""
  for item in items:
    if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
      item.add_marker(pytest.mark.slow)
