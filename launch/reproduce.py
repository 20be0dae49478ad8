r"""Reproduces the paper's study end to end.

  python -m launch.reproduce --workdir=DIR [--config=ctxtag/configs/default.py]
      [--bootstrap_resamples=1000 --bootstrap_seed=0 --confidence=0.95]
      [--print_report]

Builds the dataset if missing, trains the audio, audio + user and user-only
models, predicts with their best checkpoints, runs every protocol and writes
results.json, report.md and plots/ into the workdir, then prints a summary
(satisfaction F1 per model, the paired differences, the files written);
`--print_report` prints the whole report.md before it. A rerun on the same
workdir resumes or reuses what is there; a second run on a workdir in use
ends at once, naming the first.

On several hosts, run the same command on each, adding
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
from ctxtag import report
from ctxtag import run
from launch import cli
from launch import config_flag
from launch import statistics_flags

_CONFIG = config_flag.define(
    "config", config_flag.DEFAULT_FILE,
    "Run config, a file of ctxtag/configs/ or one like them;"
    " --config.KEY=VALUE overrides a key.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory.",
                               required=True)
cli.refuse_empty("workdir")  # "" would be the current directory
_PRINT_REPORT = flags.DEFINE_bool(
    "print_report", False,
    "Print the whole report.md before the summary.")

# Shown by --helpshort: the bootstrap's, --debug, several hosts.
flags.adopt_module_key_flags(statistics_flags)
flags.adopt_module_key_flags(cli)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  workdir = files.absolute(_WORKDIR.value)  # `--workdir=~/x` is no "~" dir
  settings = statistics_flags.settings()
  # Holds the workdir's lock.
  results = run.reproduce(_CONFIG.value, workdir, settings)
  if distributed.is_main():
    paths = report.output_paths(workdir, results, with_training=True)
    if _PRINT_REPORT.value:
      with open(os.path.join(workdir, "report.md")) as f:
        print(f.read())
    print(report.summary_text(
        results, f"ctxtag run: {_CONFIG.value.dataset}, test split", paths),
          end="")


if __name__ == "__main__":
  cli.run(main)
