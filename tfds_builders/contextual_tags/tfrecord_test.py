"""tfrecord beside a ctxtag build: `tfds.load` (tf.data) reads every example
that ctxtag reads, equal field by field, and ctxtag still reads it.

Needs TensorFlow (the tfds-test extra, in a venv of its own); skipped
without it. Run with `python -m pytest -m tfds_harness tfds_builders`.
"""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

from ctxtag import datasets
from ctxtag import input_pipeline
from tfds_builders.contextual_tags import tfrecord

pytestmark = pytest.mark.tfds_harness
NAME = "contextual_tags/simulated_small"
SPLITS = ("train", "validation", "test")


def test_tfds_load_reads_what_ctxtag_reads_once_tfrecord_is_beside(tmp_path):
  built = datasets.build(NAME, str(tmp_path / "built"))
  data_dir = str(tmp_path / "both")
  path = os.path.join(data_dir, os.path.relpath(built, str(tmp_path /
                                                            "built")))
  shutil.copytree(built, path)
  written = tfrecord.add_tfrecord(path)
  assert len(written) == 3 and all(".tfrecord-" in name for name in written)
  with open(os.path.join(path, "dataset_info.json")) as f:
    info = json.load(f)
  assert (info["fileFormat"], info["alternativeFileFormats"]) == (
      "tfrecord", ["array_record"])
  for split in SPLITS:
    loaded = {int(e["song_id"]): e for e in tfds.as_numpy(
        tfds.load(NAME, data_dir=data_dir, split=split))}
    source = tfds.builder_from_directory(built).as_data_source(split)
    assert len(loaded) == len(source)
    for index in range(len(source)):
      want = source[index]
      got = loaded[int(want["song_id"])]
      np.testing.assert_array_equal(got["mel"], want["mel"])
      for field, values in want["pairs"].items():
        np.testing.assert_array_equal(got["pairs"][field], values)
    np.testing.assert_array_equal(
        input_pipeline.load_split(path, split).label_P,
        input_pipeline.load_split(built, split).label_P)
  assert datasets.build(NAME, data_dir) == path  # ctxtag reuses it
  assert tfrecord.add_tfrecord(path) == []  # once only
