r"""Runs every evaluation protocol and writes results.json and report.md.

From a trained workdir (predictions from the best checkpoints):

  python -m launch.evaluate --workdir=DIR

From CSVs in the public dataset's layout (at least one prediction table):

  python -m launch.evaluate --groundtruth=GT.csv --audio_predictions=A.csv \
      --user_predictions=U.csv [--user_only_predictions=V.csv] \
      [--oracle_predictions=O.csv --train_groundtruth=TRAIN.csv] \
      [--validation_groundtruth=VGT.csv --validation_audio_predictions=VA.csv] \
      --output_dir=OUT

Both modes add bootstrap intervals over users (--bootstrap_resamples,
--bootstrap_seed, --confidence), ranking metrics and paired comparisons of
the models; thresholds tuned on validation need the validation tables, and
each model's share of the ceiling needs the oracle and the training labels.

A bad table or a full disk ends with one line naming the file (and line);
`--debug` shows the traceback. A trained run's evaluation can run on the
hosts that trained it (--coordinator_address, --num_processes, --process_id):
all predict, process 0 evaluates and writes.
"""

import os

from absl import app
from absl import flags

from ctxtag import distributed
from ctxtag.evaluation import bootstrap
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
_ORACLE = flags.DEFINE_string(
    "oracle_predictions", None,
    "CSV song_id,user_id,<labels>: the true context distribution per pair"
    " (simulated data), the ceiling of ceiling_share.")
_VALIDATION_GROUNDTRUTH = flags.DEFINE_string(
    "validation_groundtruth", None,
    "CSV song_id,user_id,<labels>: validation ground truth, for thresholds"
    " tuned on validation (with --validation_audio_predictions).")
_VALIDATION_AUDIO = flags.DEFINE_string(
    "validation_audio_predictions", None,
    "CSV song_id,<labels>: the audio model's validation scores per track.")
_TRAIN_GROUNDTRUTH = flags.DEFINE_string(
    "train_groundtruth", None,
    "CSV song_id,user_id,<labels>: training ground truth, whose context"
    " shares are the prior baseline of ceiling_share.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where results.json and report.md go (CSV mode).")
_RESAMPLES = flags.DEFINE_integer(
    "bootstrap_resamples", 1000,
    "Bootstrap resamples of the users for the intervals (0: none).",
    lower_bound=0)
_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "Seed of the resamples.")
_CONFIDENCE = flags.DEFINE_float(
    "confidence", 0.95, "Coverage of the bootstrap intervals.",
    lower_bound=0.0, upper_bound=1.0)

_CSV_FLAGS = (_GROUNDTRUTH, _AUDIO, _USER, _USER_ONLY, _ORACLE,
              _VALIDATION_GROUNDTRUTH, _VALIDATION_AUDIO, _TRAIN_GROUNDTRUTH,
              _OUTPUT_DIR)


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
  if not (_AUDIO.value or _USER.value or _USER_ONLY.value or _ORACLE.value):
    raise app.UsageError(
        "no predictions to evaluate: give --audio_predictions,"
        " --user_predictions or --user_only_predictions")
  if bool(_VALIDATION_GROUNDTRUTH.value) != bool(_VALIDATION_AUDIO.value):
    raise app.UsageError("thresholds are tuned on validation with both"
                         " --validation_groundtruth and"
                         " --validation_audio_predictions; give both or"
                         " neither")
  if _VALIDATION_AUDIO.value and not _AUDIO.value:
    raise app.UsageError("--validation_audio_predictions tunes the audio"
                         " model's thresholds; give --audio_predictions too")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  _check_mode()
  common.quiet_library_logs()
  settings = bootstrap.Settings(_RESAMPLES.value, _SEED.value,
                                _CONFIDENCE.value)
  if _WORKDIR.value:
    common.evaluate_workdir(_WORKDIR.value,
                            common.run_dataset_path(_WORKDIR.value),
                            _SPLIT.value, settings=settings)
    output_dir = _WORKDIR.value
  else:
    pair_models = {name: path for name, path in (
        ("audio_user", _USER.value), ("user", _USER_ONLY.value),
        ("oracle", _ORACLE.value)) if path}
    validation = ((_VALIDATION_GROUNDTRUTH.value, _VALIDATION_AUDIO.value)
                  if _VALIDATION_GROUNDTRUTH.value else None)
    # Host work only: process 0 does it, any others wait.
    distributed.on_main("evaluate the tables", lambda: common.evaluate_tables(
        _OUTPUT_DIR.value, _GROUNDTRUTH.value, _AUDIO.value, pair_models,
        "ctxtag evaluation of prediction CSVs",
        [f"Ground truth: `{_GROUNDTRUTH.value}`."], validation=validation,
        train_groundtruth=_TRAIN_GROUNDTRUTH.value, settings=settings))
    output_dir = _OUTPUT_DIR.value
  if distributed.is_main():
    with open(os.path.join(output_dir, "report.md")) as f:
      print(f.read())


if __name__ == "__main__":
  cli.run(main)
