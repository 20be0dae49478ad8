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

from launch import common
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

def _disk_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.quiet_library_logs()
  start = time.time()
  try:
    path = common.build(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value,
                        ",".join(_SIM.value))
  except ValueError as error:  # bad --dataset or --sim: say so, no traceback
    raise app.UsageError(str(error)) from None
  print(f"built {path} in {time.time() - start:.1f} s,"
        f" {_disk_bytes(path) / 1e6:.1f} MB on disk")
  print(common.summary_text(path))


if __name__ == "__main__":
  app.run(main)
