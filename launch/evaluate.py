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
--mo_mg_truth=all_splits scores MO-MG against each track's contexts over
every split, as the authors' pipeline does (CSV mode: with the training and
validation tables). Both modes end with a summary naming the files written;
--print_report prints the whole report.md before it.

A bad table or a full disk ends with one line naming the file (and line);
`--debug` shows the traceback. A trained run's evaluation can run on the
hosts that trained it (--coordinator_address, --num_processes, --process_id):
all predict, process 0 evaluates and writes.
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
from ctxtag import report
from ctxtag import study
from ctxtag import run
from launch import cli
from launch import statistics_flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run's directory.")
cli.refuse_empty("workdir")  # "" would be the current directory
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
_MO_MG_TRUTH = flags.DEFINE_enum(
    "mo_mg_truth", None, list(study.MO_MG_TRUTHS),
    "MO-MG's ground truth: each track's contexts over the evaluated split's"
    " pairs (test) or over every split's (all_splits, the authors'"
    " pipeline). Default: the run config's (--workdir), else test.")
_PRINT_REPORT = flags.DEFINE_bool(
    "print_report", False,
    "Print the whole report.md before the summary.")

# Shown by --helpshort: the bootstrap's, --debug, several hosts.
flags.adopt_module_key_flags(statistics_flags)
flags.adopt_module_key_flags(cli)

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
  settings = statistics_flags.settings()
  if _WORKDIR.value:
    output_dir = files.absolute(_WORKDIR.value)
    dataset_path = run.run_dataset_path(output_dir)  # is it a run at all?
    # It rewrites the run's predictions, results and report: not beside a
    # run (or another evaluation) of the same workdir.
    with locks.run_lock(output_dir):
      results = run.evaluate_workdir(output_dir, dataset_path, _SPLIT.value,
                                     settings=settings,
                                     mo_mg_truth=_MO_MG_TRUTH.value)
    heading = (f"ctxtag run: {run.load_run_config(output_dir).dataset},"
               f" {_SPLIT.value} split")
    with_training = True
  else:
    # `--groundtruth=~/x.csv` (the shell leaves a "~" after "=" as is);
    # messages name the files as given otherwise.
    paths = {flag.name: os.path.expanduser(flag.value)
             for flag in _CSV_FLAGS if flag.value}
    model_files = {name: paths[flag] for name, flag in (
        ("audio", "audio_predictions"), ("audio_user", "user_predictions"),
        ("user", "user_only_predictions"),
        ("oracle", "oracle_predictions")) if flag in paths}
    csv_files = study.CsvFiles(
        paths["groundtruth"], model_files,
        paths.get("validation_groundtruth"),
        {"audio": paths["validation_audio_predictions"]}
        if "validation_audio_predictions" in paths else {},
        paths.get("train_groundtruth"))
    evaluation = run.Evaluation(
        csv_files, "ctxtag evaluation of prediction CSVs",
        [f"Ground truth: `{_GROUNDTRUTH.value}`."], settings=settings,
        mo_mg_truth=_MO_MG_TRUTH.value or "test")
    output_dir = paths["output_dir"]
    # Host work only: process 0 does it, any others wait.
    results = distributed.on_main(
        "evaluate the tables",
        lambda: run.evaluate_tables(output_dir, evaluation))
    heading = f"ctxtag evaluation of {_GROUNDTRUTH.value}"
    with_training = False
  if distributed.is_main():
    if _PRINT_REPORT.value:
      with open(os.path.join(output_dir, "report.md")) as f:
        print(f.read())
    print(report.summary_text(results, heading, report.output_paths(
        output_dir, results, with_training)), end="")


if __name__ == "__main__":
  cli.run(main)
