"""A damaged dataset is named, never read as whole, and rebuilt on request."""

import glob
import os
import shutil

import pytest

from ctxtag import dataset_check
from ctxtag import datasets
from ctxtag import errors
from ctxtag import input_pipeline
from ctxtag import run
from tfds_builders import contextual_tags

VERSION = str(contextual_tags.Builder.VERSION)

NAME = "contextual_tags/simulated_small"


@pytest.fixture()
def built(tmp_path, small_dataset_path):
  data_dir = tmp_path / "data"
  path = input_pipeline.dataset_dir(data_dir, NAME, VERSION)
  shutil.copytree(small_dataset_path, path)
  return str(data_dir), path


def _train_file(path: str) -> str:
  return glob.glob(os.path.join(path, "*-train.array_record-*"))[0]


def test_a_whole_dataset_passes(built):
  _, path = built
  dataset_check.check(path, full=True)


@pytest.mark.slow
def test_truncated_info_is_named(built):
  data_dir, path = built
  info = os.path.join(path, "dataset_info.json")
  text = open(info).read()
  open(info, "w").write(text[:len(text) // 2])
  with pytest.raises(errors.DatasetError,
                     match=r"dataset_info.json: damaged .*--force_rebuild"):
    datasets.build(NAME, data_dir)


@pytest.mark.slow
def test_a_short_record_file_is_named(built):
  data_dir, path = built
  target = _train_file(path)
  data = open(target, "rb").read()
  open(target, "wb").write(data[:len(data) // 2])
  with pytest.raises(errors.DatasetError,
                     match=os.path.basename(target) + ": damaged"):
    datasets.build(NAME, data_dir)
  rebuilt = datasets.build(NAME, data_dir, force_rebuild=True)
  dataset_check.check(rebuilt, full=True)
  assert input_pipeline.load_split(rebuilt, "train").num_tracks == 40


def test_a_flipped_byte_is_found_by_the_full_check(built):
  _, path = built
  target = _train_file(path)
  data = bytearray(open(target, "rb").read())
  data[len(data) // 3] ^= 0xFF
  open(target, "wb").write(bytes(data))
  damaged = (r"array_record-00000-of-00001: damaged \(record \d+ of split"
             r" 'train' cannot be read")
  with pytest.raises(errors.DatasetError, match=damaged):
    dataset_check.check(path, full=True)
  # A run's quick check reads a split's first and last records only; the
  # flipped byte surfaces when the run opens the split, named as well.
  with pytest.raises(errors.DatasetError, match=damaged + ".*--force_rebuild"):
    input_pipeline.load_split(path, "train")


def test_a_missing_shard_is_named(built):
  _, path = built
  os.remove(_train_file(path))
  with pytest.raises(errors.DatasetError, match="0 of 1 shard files"):
    dataset_check.check(path)


@pytest.mark.slow
def test_a_stale_incomplete_build_is_removed(tmp_path, small_dataset_path):
  data_dir = tmp_path / "data"
  path = input_pipeline.dataset_dir(data_dir, NAME, VERSION)
  stale = os.path.join(os.path.dirname(path), f"incomplete.ABC123_{VERSION}")
  os.makedirs(stale)
  open(os.path.join(stale, "half.array_record"), "w").write("x")
  shutil.copytree(small_dataset_path, path)
  datasets.build(NAME, str(data_dir))
  assert not os.path.exists(stale)


def test_a_run_made_on_another_dataset_version_is_refused(tmp_path):
  workdir = tmp_path / "run"
  workdir.mkdir()
  run.check_dataset_version(str(workdir))  # a new run: nothing to check
  old = os.path.join(str(tmp_path), "data", NAME, "1.0.0")
  (workdir / "dataset_path.txt").write_text(old)
  with pytest.raises(errors.DatasetError,
                     match=f"version 1.0.0 of the dataset; this ctxtag builds"
                           f" version {VERSION}.*new --workdir"):
    run.check_dataset_version(str(workdir))
  (workdir / "dataset_path.txt").write_text(
      input_pipeline.dataset_dir(tmp_path / "data", NAME, VERSION))
  run.check_dataset_version(str(workdir))


@pytest.mark.slow
def test_a_dataset_of_another_version_is_not_read(tmp_path, small_dataset_path,
                                                  capsys):
  data_dir = tmp_path / "data"
  old = os.path.join(str(data_dir), NAME, "1.0.0")
  shutil.copytree(small_dataset_path, old)
  path = datasets.build(NAME, str(data_dir))
  assert path == input_pipeline.dataset_dir(data_dir, NAME, VERSION)
  assert "version 1.0.0 built by an earlier ctxtag is not read" in (
      capsys.readouterr().err)
