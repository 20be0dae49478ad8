r"""Reproduces the paper's study end to end.

  python -m launch.reproduce --workdir=DIR [--config=launch/configs/default.py]

Builds the dataset if missing, trains the audio, audio + user and user-only
models, predicts with their best checkpoints, runs every protocol and writes
results.json, report.md and plots/ into the workdir. A rerun on the same
workdir resumes or reuses what is there.

On several hosts, run the same command on each, adding
--coordinator_address=HOST0:PORT --num_processes=N --process_id=I.
"""

import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from ctxtag import distributed
from ctxtag import train
from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(os.path.dirname(__file__), "configs", "default.py"),
    "Run config.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)


def reproduce(config, workdir: str) -> dict | None:
  """Runs the whole study; returns the results dict (None on processes other
  than 0 of a run on several: process 0 evaluates)."""
  start = time.time()
  dataset_path = common.prepare_run(config, workdir)
  if distributed.is_main():
    print(common.summary_text(dataset_path), flush=True)
    if common.build_report_text(dataset_path):
      print(common.build_report_text(dataset_path), flush=True)
  for name in config.models:
    train.train_and_evaluate(name, config, dataset_path, workdir)
  details = common.dataset_details(config, dataset_path)
  results = common.evaluate_workdir(workdir, dataset_path, "test", details)
  elapsed = time.time() - start
  if distributed.is_main():
    print(f"reproduction finished in {elapsed / 60:.1f} min; see"
          f" {os.path.join(workdir, 'report.md')}", flush=True)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.quiet_library_logs()
  reproduce(_CONFIG.value, _WORKDIR.value)
  if distributed.is_main():
    with open(os.path.join(_WORKDIR.value, "report.md")) as f:
      print(f.read())


if __name__ == "__main__":
  from launch import cli  # pylint: disable=g-import-not-at-top
  cli.run(main)
