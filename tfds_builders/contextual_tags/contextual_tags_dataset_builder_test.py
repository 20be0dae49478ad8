"""TFDS's standard harness (`tfds.testing.DatasetBuilderTestCase`), a case
per config: each is built from dummy_data/ as `tfds build` would (default
tfrecord, no argument beyond TFDS's), then read back through tf.data.

The harness needs TensorFlow and dill, which ctxtag never imports at run
time: install the tfds-test extra into a venv of its own and run

  python -m pytest -m tfds_harness tfds_builders/contextual_tags

Without TensorFlow the module is skipped.
"""

import os

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("dill")

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from tfds_builders.contextual_tags import contextual_tags_dataset_builder
from tfds_builders.contextual_tags import dummy_data_generation as dummy

pytestmark = pytest.mark.tfds_harness
Builder = contextual_tags_dataset_builder.Builder


def _listing(directory) -> dict[str, int]:
  """Every file under `directory` -> its size."""
  directory = os.fspath(directory)
  return {os.path.relpath(os.path.join(root, name), directory):
          os.path.getsize(os.path.join(root, name))
          for root, _, names in os.walk(directory) for name in names}


class SimulatedSmallTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["simulated_small"]
  SPLITS = {"train": 40, "validation": 20, "test": 20}  # its *_tracks


class SimulatedTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = Builder
  BUILDER_CONFIG_NAMES_TO_TEST = ["simulated"]
  SPLITS = {"train": 2000, "validation": 600, "test": 1000}


class _RealDataTest(tfds.testing.DatasetBuilderTestCase):
  """A config that reads a manual dir: dummy_data/<config>/.

  The harness forbids `os`, `open` and `np.load` on paths, so that builders
  read through tf.io.gfile; ctxtag's sources read local manual dirs and
  their mel cache with numpy and the standard library (ctxtag reads no
  TensorFlow), so the checks are off here.
  """
  DATASET_CLASS = Builder
  MOCK_OUT_FORBIDDEN_OS_FUNCTIONS = False

  def _make_builder(self, config=None):
    builder = super()._make_builder(config=config)
    if config is not None:  # the one built (setUp makes one per mode)
      self.built_root = os.fspath(builder.data_dir_root)
    return builder

  def test_download_and_prepare_as_dataset(self):
    before = _listing(self.dummy_data)
    super().test_download_and_prepare_as_dataset()
    self.assertEqual(_listing(self.dummy_data), before)  # nothing written
    cache = os.path.join(self.built_root, "downloads", "ctxtag_mels")
    self.assertTrue(os.path.isdir(cache), cache)


class ZenodoTest(_RealDataTest):
  BUILDER_CONFIG_NAMES_TO_TEST = ["zenodo"]
  EXAMPLE_DIR = os.path.join(dummy.DUMMY_DATA, "zenodo")
  SPLITS = {split: len({song for song, _, _ in rows})
            for split, rows in dummy.ZENODO_SPLITS.items()}


class PlaylistsTest(_RealDataTest):
  BUILDER_CONFIG_NAMES_TO_TEST = ["playlists"]
  EXAMPLE_DIR = os.path.join(dummy.DUMMY_DATA, "playlists")
  # The 36 pairs of the 6 tracks, split at random (56/16/28 %, seed 0):
  # every track has a pair in train, 5 in validation, 4 in test.
  SPLITS = {"train": 6, "validation": 5, "test": 4}


del _RealDataTest  # a base, not a case of its own
