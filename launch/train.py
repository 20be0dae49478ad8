r"""Trains one model of a run.

  python -m launch.train --workdir=DIR --model=audio_user \
      [--config=launch/configs/default.py]

Builds the dataset if missing; a rerun on the same workdir resumes. On
several hosts, run the same command on each, adding
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I.
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from ctxtag import distributed
from ctxtag import models
from ctxtag import train
from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "default.py"),
    "Run config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)
_MODEL = flags.DEFINE_enum("model", None, list(models.OUTPUTS),
                           "Model to train.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.quiet_library_logs()
  config = _CONFIG.value
  dataset_path = common.prepare_run(config, _WORKDIR.value)
  summary = train.train_and_evaluate(_MODEL.value, config, dataset_path,
                                     _WORKDIR.value)
  if distributed.is_main():
    print(f"{_MODEL.value}: best epoch {summary['best_epoch']} of"
          f" {summary['epochs']}, validation loss"
          f" {summary['best_validation_loss']:.4f}")


if __name__ == "__main__":
  from launch import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
