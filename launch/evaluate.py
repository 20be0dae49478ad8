r"""Runs every evaluation protocol and writes results.json and report.md.

From a trained workdir (predictions from the best checkpoints):

  python -m launch.evaluate --workdir=DIR

From CSVs in the public dataset's layout (at least one prediction table):

  python -m launch.evaluate --groundtruth=GT.csv --audio_predictions=A.csv \
      --user_predictions=U.csv [--user_only_predictions=V.csv] --output_dir=OUT

A bad table or a full disk ends with one line naming the file (and line);
`--debug` shows the traceback.
"""

import os

from absl import app
from absl import flags

from launch import cli
from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's directory.")
_SPLIT = flags.DEFINE_enum("split", "test", ["validation", "test"],
                           "Split to evaluate, with --workdir.")
_GROUNDTRUTH = flags.DEFINE_string(
    "groundtruth", None, "CSV song_id,user_id,<labels> (one-hot).")
_AUDIO = flags.DEFINE_string(
    "audio_predictions", None, "CSV song_id,<labels>: audio scores per track.")
_USER = flags.DEFINE_string(
    "user_predictions", None,
    "CSV song_id,user_id,<labels>: audio + user scores per pair.")
_USER_ONLY = flags.DEFINE_string(
    "user_only_predictions", None,
    "CSV song_id,user_id,<labels>: user-only scores per pair.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where results.json and report.md go (CSV mode).")

_CSV_FLAGS = (_GROUNDTRUTH, _AUDIO, _USER, _USER_ONLY, _OUTPUT_DIR)


def _check_mode() -> None:
  """Refuses an incomplete or mixed command line before anything runs."""
  csv_flags = [f"--{flag.name}" for flag in _CSV_FLAGS if flag.value]
  if _WORKDIR.value:
    if csv_flags:
      raise app.UsageError(f"--workdir evaluates a run; it takes no"
                           f" {', '.join(csv_flags)}")
    return
  if not (_GROUNDTRUTH.value and _OUTPUT_DIR.value):
    raise app.UsageError("give --workdir, or --groundtruth and --output_dir"
                         " with prediction CSVs")
  if not (_AUDIO.value or _USER.value or _USER_ONLY.value):
    raise app.UsageError(
        "no predictions to evaluate: give --audio_predictions,"
        " --user_predictions or --user_only_predictions")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _check_mode()
  common.quiet_library_logs()
  if _WORKDIR.value:
    common.evaluate_workdir(_WORKDIR.value,
                            common.run_dataset_path(_WORKDIR.value),
                            _SPLIT.value)
    output_dir = _WORKDIR.value
  else:
    pair_models = {name: path for name, path in (
        ("audio_user", _USER.value), ("user", _USER_ONLY.value)) if path}
    common.evaluate_tables(_OUTPUT_DIR.value, _GROUNDTRUTH.value, _AUDIO.value,
                           pair_models, "ctxtag evaluation of prediction CSVs",
                           [f"Ground truth: `{_GROUNDTRUTH.value}`."])
    output_dir = _OUTPUT_DIR.value
  with open(os.path.join(output_dir, "report.md")) as f:
    print(f.read())


if __name__ == "__main__":
  cli.run(main)
