r"""Trains one model of a run.

  python -m launch.train --workdir=DIR --model=audio_user \
      [--config=launch/configs/default.py]

Builds the dataset if missing; a rerun on the same workdir resumes, and a
second run on a workdir in use ends at once naming the first. On
several hosts, run the same command on each, adding
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I.
"""

import os

# First: a Ctrl-C during the imports below is one line (launch.cli).
from launch import cli  # pylint: disable=g-bad-import-order

from absl import app
from absl import flags

from ctxtag import distributed
from ctxtag import files
from ctxtag import locks
from ctxtag import models
from ctxtag import train
from ctxtag import run

_CONFIG = cli.define_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "default.py"),
    "Run config.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)
cli.refuse_empty("workdir")  # "" would be the current directory
_MODEL = flags.DEFINE_enum("model", None, list(models.OUTPUTS),
                           "Model to train.", required=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  config = _CONFIG.value
  workdir = files.absolute(_WORKDIR.value)  # `--workdir=~/x` is no "~" dir
  # One run per workdir, from before the first write to the last.
  with locks.run_lock(workdir):
    dataset_path = run.prepare_run(config, workdir)
    summary = train.train_and_evaluate(_MODEL.value, config, dataset_path,
                                       workdir)
  if distributed.is_main():
    print(f"{_MODEL.value}: best epoch {summary['best_epoch']} of"
          f" {summary['epochs']}, validation loss"
          f" {summary['best_validation_loss']:.4f}")


if __name__ == "__main__":
  cli.run(main)
