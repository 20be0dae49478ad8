r"""Runs every evaluation protocol and writes results.json and report.md.

From a trained workdir (predictions from the best checkpoints):

  python -m launch.evaluate --workdir=DIR

From CSVs in the public dataset's layout:

  python -m launch.evaluate --groundtruth=GT.csv --audio_predictions=A.csv \
      --user_predictions=U.csv [--user_only_predictions=V.csv] --output_dir=OUT
"""

import os

from absl import app
from absl import flags

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

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.quiet_library_logs()
  if _WORKDIR.value:
    common.evaluate_workdir(_WORKDIR.value,
                            common.run_dataset_path(_WORKDIR.value),
                            _SPLIT.value)
    output_dir = _WORKDIR.value
  elif _GROUNDTRUTH.value and _OUTPUT_DIR.value:
    pair_models = {name: path for name, path in (
        ("audio_user", _USER.value), ("user", _USER_ONLY.value)) if path}
    common.evaluate_tables(_OUTPUT_DIR.value, _GROUNDTRUTH.value, _AUDIO.value,
                    pair_models, "ctxtag evaluation of prediction CSVs",
                    [f"Ground truth: `{_GROUNDTRUTH.value}`."])
    output_dir = _OUTPUT_DIR.value
  else:
    raise app.UsageError("give --workdir, or --groundtruth and --output_dir")
  print(open(os.path.join(output_dir, "report.md")).read())


if __name__ == "__main__":
  app.run(main)
