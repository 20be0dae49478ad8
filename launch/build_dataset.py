r"""Builds a contextual_tags dataset as array_record files.

  python -m launch.build_dataset --dataset=contextual_tags/simulated \
      --data_dir=~/tensorflow_datasets [--sim=user_influence=0.8 ...]

Prints what was built: tracks, pairs and users per split, context shares,
users per track and distinct contexts per track.
"""

import os
import time

from absl import app
from absl import flags
import tensorflow_datasets as tfds

from ctxtag import dataset_stats
from ctxtag import input_pipeline
from tfds_builders import contextual_tags

_DATASET = flags.DEFINE_string(
    "dataset", "contextual_tags/simulated",
    "contextual_tags/<config>; configs: "
    + ", ".join(c.name for c in contextual_tags.BUILDER_CONFIGS))
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.path.join("~", "tensorflow_datasets"),
    "Where TFDS writes the dataset.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "Directory of manually obtained files, for configs that read them.")
_SIM = flags.DEFINE_multi_string(
    "sim", [],
    "Simulation setting override as key=value (repeatable), e.g."
    " --sim=num_tracks=5000 --sim=user_influence=0.8.")

SPLITS = ("train", "validation", "test")


def build(dataset: str, data_dir: str, manual_dir: str | None = None,
          simulation_overrides: str = "") -> str:
  """Builds `dataset` under `data_dir` unless it is already complete.

  TFDS writes into an `incomplete.*` directory and renames it only once every
  split is written, so an interrupted build never reads as complete.

  Args:
    dataset: "contextual_tags/<config>".
    data_dir: the TFDS data directory.
    manual_dir: directory of manually obtained files, if the config reads any.
    simulation_overrides: "key=value,..." simulation settings to replace.

  Returns:
    The versioned directory of the built dataset.
  """
  name, _, config_name = dataset.partition("/")
  if name != "contextual_tags" or not config_name:
    raise ValueError(f"--dataset must be contextual_tags/<config>, got"
                     f" {dataset!r}")
  config = contextual_tags.config_with_overrides(
      config_name, contextual_tags.parse_overrides(simulation_overrides))
  builder = contextual_tags.Builder(
      data_dir=os.path.expanduser(data_dir), config=config,
      file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return os.fspath(builder.data_path)


def summary_text(dataset_path: str) -> str:
  summaries = {split: dataset_stats.summarize(
      input_pipeline.load_split(dataset_path, split)) for split in SPLITS}
  return dataset_stats.format_summary(summaries)


def _disk_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  start = time.time()
  path = build(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value,
               ",".join(_SIM.value))
  print(f"built {path} in {time.time() - start:.1f} s,"
        f" {_disk_bytes(path) / 1e6:.1f} MB on disk")
  print(summary_text(path))


if __name__ == "__main__":
  app.run(main)
