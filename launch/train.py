r"""Trains one model of a run.

  python -m launch.train --workdir=DIR --model=audio_user \
      [--config=ctxtag/configs/default.py]

Builds the dataset if missing; a rerun on the same workdir resumes, and a
second run on a workdir in use ends at once naming the first. On
several hosts, run the same command on each, adding
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I.
"""

from ctxtag import interrupts

# Ahead of the imports below, which take seconds: a Ctrl-C during them is one
# line too, and a worker process that imports this module leaves it to the
# launcher (see interrupts.before_imports).
interrupts.before_imports(__name__)

# pylint: disable=g-import-not-at-top,wrong-import-position
import os

from absl import app
from absl import flags

from ctxtag import distributed
from ctxtag import files
from ctxtag import locks
from ctxtag import models
from ctxtag import train
from ctxtag import run
from launch import cli
from launch import config_flag

_CONFIG = config_flag.define(
    "config", config_flag.DEFAULT_FILE,
    "Run config, a file of ctxtag/configs/ or one like them;"
    " --config.KEY=VALUE overrides a key.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)
cli.refuse_empty("workdir")  # "" would be the current directory
_MODEL = flags.DEFINE_enum("model", None, list(models.OUTPUTS),
                           "Model to train.", required=True)

flags.adopt_module_key_flags(cli)  # --debug, several hosts: in --helpshort


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
