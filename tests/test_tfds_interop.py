"""The builder as TFDS alone drives it (as `tfds build` and TFDS's harness
do), and ctxtag given datasets that TFDS's tools wrote: tfrecord only is
refused in one line naming the conversion; tfrecord with array_record
beside it is read as if ctxtag had built it. No TensorFlow here."""

import csv
import json
import os
import shutil
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ctxtag import dataset_check
from ctxtag import datasets
from ctxtag import errors
from ctxtag import input_pipeline
from tfds_builders import contextual_tags
from tfds_builders.contextual_tags import dummy_data_generation as dummy

NAME = "contextual_tags/simulated_small"
SPLITS = ("train", "validation", "test")
VERSION = str(contextual_tags.Builder.VERSION)
ZENODO_DUMMY = os.path.join(dummy.DUMMY_DATA, "zenodo")
# TFDS's hooks for a GeneratorBasedBuilder; everything else it defines with
# a leading underscore is its own machinery.
PUBLIC_HOOKS = {"_info", "_split_generators", "_generate_examples"}


def _copy(small_dataset_path: str, tmp_path) -> tuple[str, str]:
  data_dir = str(tmp_path / "data")
  path = input_pipeline.dataset_dir(data_dir, NAME, VERSION)
  shutil.copytree(small_dataset_path, path)
  return data_dir, path


def _set_formats(path: str, main: str, alternatives: list[str]) -> None:
  info_path = os.path.join(path, dataset_check.INFO_FILE)
  with open(info_path) as f:
    info = json.load(f)
  info["fileFormat"] = main
  info["alternativeFileFormats"] = alternatives
  with open(info_path, "w") as f:
    json.dump(info, f)


def test_a_tfrecord_dataset_is_refused_in_one_line_naming_the_conversion(
    small_dataset_path, tmp_path):
  data_dir, path = _copy(small_dataset_path, tmp_path)
  for name in os.listdir(path):  # as `tfds build` names its shards
    os.rename(os.path.join(path, name),
              os.path.join(path, name.replace(".array_record-", ".tfrecord-")))
  _set_formats(path, "tfrecord", [])
  for read in (lambda: datasets.build(NAME, data_dir),
               lambda: input_pipeline.load_split(path, "train")):
    with pytest.raises(errors.DatasetError) as raised:
      read()
    message = str(raised.value)
    assert "\n" not in message and "damaged" not in message
    assert message.startswith(f"{path}: written as tfrecord, which ctxtag"
                              " does not read")
    assert (f"tfds convert_format --dataset_version_dir={path}"
            " --out_file_format=array_record") in message
  assert sorted(os.listdir(path)) == sorted(  # nothing deleted
      n.replace(".array_record-", ".tfrecord-")
      for n in os.listdir(small_dataset_path))


def test_tfrecord_with_array_record_beside_reads_as_ctxtag_built_it(
    small_dataset_path, tmp_path):
  data_dir, path = _copy(small_dataset_path, tmp_path)
  # What `tfds build` then `tfds convert_format --out_file_format=array_record`
  # leave (and tfds_builders.contextual_tags.tfrecord): tfrecord listed first.
  _set_formats(path, "tfrecord", ["array_record"])
  assert datasets.build(NAME, data_dir) == path
  dataset_check.check(path, full=True)
  for split in SPLITS:
    got = input_pipeline.load_split(path, split)
    want = input_pipeline.load_split(small_dataset_path, split)
    assert got.num_tracks == want.num_tracks
    np.testing.assert_array_equal(got.label_P, want.label_P)
    np.testing.assert_array_equal(got.user_id_P, want.user_id_P)
    np.testing.assert_array_equal(got.source[0]["mel"],
                                  want.source[0]["mel"])
  assert "tensorflow" not in sys.modules


def test_the_builder_overrides_only_tfds_public_hooks():
  base = tfds.core.GeneratorBasedBuilder
  overridden = {name for name, value in vars(contextual_tags.Builder).items()
                if name.startswith("_") and not name.startswith("__")
                and hasattr(base, name) and (callable(value) or isinstance(
                    value, (staticmethod, classmethod, property)))}
  assert overridden == PUBLIC_HOOKS


def test_each_instance_names_only_its_own_manual_dir(tmp_path):
  instructions = {
      name: contextual_tags.Builder(
          data_dir=str(tmp_path), config=name).MANUAL_DOWNLOAD_INSTRUCTIONS
      for name in ("simulated", "simulated_small", "zenodo", "playlists")}
  assert instructions["simulated"] is None
  assert instructions["simulated_small"] is None
  assert "Zenodo record 3961560" in instructions["zenodo"]
  assert "playlists.csv" in instructions["playlists"]
  assert "Zenodo" not in instructions["playlists"]


@pytest.mark.slow
def test_without_a_manual_dir_tfds_gets_one_line_naming_the_fetch(tmp_path):
  builder = contextual_tags.Builder(data_dir=str(tmp_path), config="zenodo")
  with pytest.raises(errors.DatasetError) as raised:
    builder.download_and_prepare(file_format="array_record")
  message = str(raised.value)
  manual = os.path.join(str(tmp_path), "downloads", "manual")
  assert "\n" not in message and "using instructions" not in message
  assert message.startswith(f"manual dir {manual} is missing or empty;"
                            " contextual_tags/zenodo reads there")
  for expected in ("train_set.csv", "user_embeddings.csv",
                   "spectrograms/mels<song_id>.npz",
                   f"python -m launch.fetch_audio --manual_dir={manual}",
                   "--manual_dir (tfds build"):
    assert expected in message


def _csv_pairs(split: str) -> set[tuple[int, int, int]]:
  with open(os.path.join(ZENODO_DUMMY, f"{split}_set.csv")) as f:
    rows = list(csv.DictReader(f))
  labels = list(rows[0])[2:]
  return {(int(row["song_id"]), int(row["user_id"]),
           [row[label] for label in labels].index("1")) for row in rows}


@pytest.mark.slow
def test_tfds_alone_builds_zenodo_with_its_report_and_inputs(tmp_path,
                                                             capsys):
  data_dir = str(tmp_path / "data")
  before = sorted(os.walk(dummy.DUMMY_DATA))
  builder = contextual_tags.Builder(data_dir=data_dir, config="zenodo")
  builder.download_and_prepare(
      file_format="array_record",
      download_config=tfds.download.DownloadConfig(manual_dir=ZENODO_DUMMY))
  path = os.fspath(builder.data_path)
  assert {"build_report.json", "inputs.json"} <= set(os.listdir(path))
  assert os.listdir(os.path.join(data_dir, "downloads", "ctxtag_mels"))
  assert sorted(os.walk(dummy.DUMMY_DATA)) == before  # nothing written there
  for split in SPLITS:
    table = input_pipeline.load_split(path, split)
    assert set(zip(table.pair_song_id_P.tolist(), table.user_id_P.tolist(),
                   table.label_P.tolist())) == _csv_pairs(split)
  # ctxtag reuses it: its inputs.json matches the manual dir as it is.
  capsys.readouterr()
  assert datasets.build("contextual_tags/zenodo", data_dir,
                        ZENODO_DUMMY) == path
  assert "did not record its inputs" not in capsys.readouterr().err
