r"""Builds a contextual_tags dataset as array_record files.

  python -m launch.build_dataset --dataset=contextual_tags/simulated \
      --data_dir=~/tensorflow_datasets [--option=user_influence=0.8 ...]
  python -m launch.build_dataset --dataset=contextual_tags/zenodo \
      --manual_dir=DIR --data_dir=DIR [--workers=N] [--strict] [--beam]

Prints what it builds and from where, then what was built: tracks, pairs
and users per split, context shares, users per track and distinct contexts
per track; for real data also the build report (what was kept, what was
dropped and why, how many tracks came from audio/ and from spectrograms/,
decoder notes by file, tracks with several audio files; a cold split's
guarantee). Started on several processes (--num_processes), process 0
builds and the others wait for it.

A dataset already built is reused, and says so ("reused DIR, built
earlier ..."). A second build of the same dataset into the same data dir
ends at once, naming the process that builds it. A real-data dataset is
reused only while its manual dir holds what it was built from
(inputs.json): otherwise it is refused, naming what changed, until
--force_rebuild.
"""

from ctxtag import interrupts

# Ahead of the imports below, which take seconds: a Ctrl-C during them is one
# line too, and a worker process that imports this module leaves it to the
# launcher (see interrupts.before_imports).
interrupts.before_imports(__name__)

# pylint: disable=g-import-not-at-top,wrong-import-position
import os
import time

from absl import app
from absl import flags

from ctxtag import dataset_check
from ctxtag import distributed
from ctxtag.sources import assemble
from ctxtag import datasets
from tfds_builders import contextual_tags
from launch import cli

_DATASET = flags.DEFINE_string(
    "dataset", "contextual_tags/simulated",
    "contextual_tags/<config>; configs: "
    + ", ".join(c.name for c in contextual_tags.BUILDER_CONFIGS))
_DATA_DIR = flags.DEFINE_string(
    "data_dir", os.path.join("~", "tensorflow_datasets"),
    "Where TFDS writes the dataset.")
_MANUAL_DIR = flags.DEFINE_string(
    "manual_dir", None,
    "Directory of manually obtained files (CSVs; each track's"
    " audio/<id>.<ext>, else spectrograms/mels<id>.npz), for configs that"
    " read them (default: DATA_DIR/downloads/manual).")
_OPTION = flags.DEFINE_multi_string(
    "option", [],
    "Setting of the config's source as key=value (repeatable), e.g."
    " --option=num_tracks=5000 (simulated) or --option=offset_seconds=10"
    " (zenodo); --option=audio=files|spectrograms reads one folder only"
    " (default: each track's audio file, else its npz). A changed dataset is"
    " built under a name of its own.")
_SIM = flags.DEFINE_multi_string(
    "sim", [], "Same as --option, for the simulated world.")
_STRICT = flags.DEFINE_bool(
    "strict", False,
    "Stop at the first defective input item (row, user, track) with an error"
    " naming it, instead of skipping and counting it.")
_WORKERS = flags.DEFINE_integer(
    "workers", None, "Processes decoding audio; default: all cores.",
    lower_bound=1)
_SPLIT_STRATEGY = flags.DEFINE_enum(
    "split_strategy", "", ["", "given", "random", "cold_user", "cold_track"],
    "How to split the pairs: '' keeps the source's own splits (zenodo's as"
    " released; playlists: random); random (over pairs), cold_user (no"
    " validation/test user in train), cold_track (no validation/test track"
    " in train). A non-default split is built under a name of its own.")
_SPLIT_SEED = flags.DEFINE_integer("split_seed", 0, "Seed of a re-split.")
_SPLIT_FRACTIONS = flags.DEFINE_list(
    "split_fractions", ["0.56", "0.16", "0.28"],
    "Train, validation and test shares of the pairs in a re-split.")
_FORCE_REBUILD = flags.DEFINE_bool(
    "force_rebuild", False,
    "Delete the dataset if it is there (e.g. damaged, or built from inputs"
    " that have changed since) and build it anew.")
_VERIFY = flags.DEFINE_bool(
    "verify", False,
    "After building (or finding) the dataset, read every record to check"
    " that none is damaged.")
_BEAM = flags.DEFINE_bool(
    "beam", False,
    "Build on Apache Beam (pip install -e '.[beam]'); pass runner flags with"
    " --beam_pipeline_options, e.g. 'runner=DirectRunner,direct_num_workers=2'.")
_BEAM_PIPELINE_OPTIONS = flags.DEFINE_string(
    "beam_pipeline_options", "",
    "Comma-separated Beam pipeline options (without --), for --beam.")

flags.adopt_module_key_flags(cli)  # --debug, several hosts: in --helpshort


def _disk_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def beam_options_from(text: str):
  """"key=value,flag" -> Beam PipelineOptions."""
  try:
    from apache_beam.options import pipeline_options  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise app.UsageError(
        "--beam needs Apache Beam: pip install -e '.[beam]'") from None
  argv = [f"--{item.strip()}" for item in text.split(",") if item.strip()]
  return pipeline_options.PipelineOptions(argv)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if flags.FLAGS["split_fractions"].present and not _SPLIT_STRATEGY.value:
    raise app.UsageError("--split_fractions sets the shares of a re-split:"
                         " give --split_strategy=random, cold_user or"
                         " cold_track too (without one the source's own"
                         " splits are kept)")
  start = time.time()
  beam_options = (beam_options_from(_BEAM_PIPELINE_OPTIONS.value)
                  if _BEAM.value else None)
  try:
    fractions = tuple(float(f) for f in _SPLIT_FRACTIONS.value)
  except ValueError:
    raise app.UsageError(f"--split_fractions must be three numbers, got"
                         f" {','.join(_SPLIT_FRACTIONS.value)}") from None
  split = assemble.SplitSettings(_SPLIT_STRATEGY.value, _SPLIT_SEED.value,
                                 fractions)
  distributed.on_main("build the dataset", lambda: _build(
      start, beam_options, split))


def _build(start: float, beam_options, split) -> None:
  """Builds (and verifies) the dataset and prints what was built."""
  path, built = datasets.build_or_reuse(
      _DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value,
      ",".join(_OPTION.value + _SIM.value), _STRICT.value, _WORKERS.value,
      beam_options, split, _FORCE_REBUILD.value)
  if _VERIFY.value:
    dataset_check.check(path, full=True,
                        rebuild="rebuild it with --force_rebuild")
    print(f"verified: every record of {path} reads")
  size = f"{_disk_bytes(path) / 1e6:.1f} MB on disk"
  if built:
    print(f"built {path} in {time.time() - start:.1f} s, {size}")
  else:
    print(f"reused {path}, built earlier ({size}; --force_rebuild builds"
          " it anew)")
  print(datasets.summary_text(path))
  report = datasets.build_report_text(path)
  if report:
    print(report)


if __name__ == "__main__":
  cli.run(main)
