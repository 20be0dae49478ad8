"""Datasets of runs: building them, checking what is built, describing them.

Building writes into TFDS's `incomplete.*` directory and renames it once
every split is written, so an interrupted build never reads as complete.
A build says what it builds, from where, in one line ("building
contextual_tags/zenodo 2.0.0 into DIR from MANUAL_DIR ..."); a real-data
config whose manual dir is missing or empty is refused before anything is
written, naming the files expected there.

One build at a time per dataset: a build takes the exclusive lock of the
dataset's directory (`<data_dir>/contextual_tags/<config>/.build.lock`,
ctxtag.locks) before it deletes or writes anything, and a second build of
the same dataset ends at once naming the first; reusing a built dataset
takes the lock shared, so runs reading one dataset start side by side.
A real-data dataset records what it was built from (inputs.json,
ctxtag.sources.inputs) and is refused, naming what changed, when its
manual dir no longer holds those inputs.
"""

import contextlib
import dataclasses
import glob
import io
import json
import os
import shutil

import ml_collections
import sys
import tensorflow_datasets as tfds

from ctxtag import dataset_check
from ctxtag import dataset_stats
from ctxtag import errors
from ctxtag import files
from ctxtag import input_pipeline
from ctxtag import locks
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import inputs as inputs_lib
from ctxtag.sources import options as options_lib
from ctxtag.sources import simulated
from tfds_builders import contextual_tags

SPLITS = ("train", "validation", "test")


def build(dataset: str, data_dir: str, manual_dir: str | None = None,
          options: str = "", strict: bool = False, workers: int | None = None,
          beam_options=None,
          split: assemble.SplitSettings = assemble.SplitSettings(),
          force_rebuild: bool = False) -> str:
  """Builds `dataset` under `data_dir` unless it is already complete.

  TFDS writes into an `incomplete.*` directory and renames it only once every
  split is written, so an interrupted build never reads as complete.

  Args:
    dataset: "contextual_tags/<config>".
    data_dir: the TFDS data directory.
    manual_dir: directory of manually obtained files, if the config reads any
      (default: TFDS's <data_dir>/downloads/manual).
    options: "key=value,..." settings of the config's source to replace.
    strict: the first defective input item is an error, not a counted skip.
    workers: processes decoding audio (default: all cores).
    beam_options: Apache Beam PipelineOptions to build on Beam.
    split: how to split the pairs (default: the source's own splits).
    force_rebuild: delete the dataset if it is there and build it anew.

  Returns:
    The versioned directory of the built dataset (absolute).

  Raises:
    locks.BusyError: another process builds this dataset (or reads it,
      when this call would rebuild it).
    errors.DatasetError: the dataset is damaged, or was built from inputs
      other than its manual dir holds now.
  """
  return build_or_reuse(dataset, data_dir, manual_dir, options, strict,
                        workers, beam_options, split, force_rebuild)[0]


def build_or_reuse(
    dataset: str, data_dir: str, manual_dir: str | None = None,
    options: str = "", strict: bool = False, workers: int | None = None,
    beam_options=None,
    split: assemble.SplitSettings = assemble.SplitSettings(),
    force_rebuild: bool = False) -> tuple[str, bool]:
  """`build`, saying also whether this call built the dataset.

  Returns:
    (the dataset's versioned directory, True if this call built it; False
    if it found it built, checked it and reused it).
  """
  name, _, config_name = dataset.partition("/")
  if name != "contextual_tags" or not config_name:
    raise errors.ConfigError(f"--dataset must be contextual_tags/<config>,"
                             f" got {dataset!r}")
  config = contextual_tags.config_with_overrides(
      config_name, options_lib.parse(options), split)
  reads_manual_dir = bool(contextual_tags.expected_files(config, ""))
  manual_dir = files.absolute(manual_dir) if manual_dir else None
  if manual_dir and reads_manual_dir:
    _check_manual_dir(dataset, manual_dir, config, given=True)
  elif manual_dir and not os.path.isdir(manual_dir):
    raise errors.DatasetError(f"--manual_dir {manual_dir}: no such directory")
  data_dir = files.absolute(data_dir)
  path = os.path.join(data_dir, contextual_tags.Builder.name, config.name,
                      str(contextual_tags.Builder.VERSION))
  builder_dir = os.path.dirname(os.path.dirname(path))
  downloads = os.path.join(data_dir, "downloads")
  # Listed before the lock makes any of them.
  new_dirs = [d for d in (os.path.dirname(path), builder_dir,
                          os.path.join(downloads, "ctxtag_mels"),
                          os.path.join(downloads, "extracted"), downloads,
                          data_dir) if not os.path.exists(d)]
  build_args = _BuildArgs(dataset, data_dir, manual_dir, config, path,
                          reads_manual_dir, strict, workers, beam_options,
                          force_rebuild, new_dirs)
  # A dataset that is there is only read: readers share the lock, so runs
  # that reuse one dataset start together; building (or deleting what a
  # killed build left) excludes every other reader and builder.
  reuse = os.path.exists(path) and not force_rebuild
  if reuse and _stale_builds(path):
    # Clear what a killed build left if no one else is here; else read.
    try:
      with locks.held(os.path.dirname(path), locks.BUILD_LOCK,
                      locks.BUILD_RULE):
        return _build_locked(build_args, exclusive=True)
    except locks.BusyError:
      pass
  for shared in ((True, False) if reuse else (False,)):
    with locks.held(os.path.dirname(path), locks.BUILD_LOCK,
                    locks.BUILD_RULE, shared=shared):
      if shared and not os.path.exists(path):
        continue  # deleted meanwhile: build it, alone
      return _build_locked(build_args, exclusive=not shared)
  raise AssertionError("unreachable")


@dataclasses.dataclass(frozen=True)
class _BuildArgs:
  """`build`'s settings, resolved (absolute paths, the builder config)."""
  dataset: str
  data_dir: str
  manual_dir: str | None
  config: object
  path: str
  reads_manual_dir: bool
  strict: bool
  workers: int | None
  beam_options: object
  force_rebuild: bool
  new_dirs: list[str]


def _build_locked(args: _BuildArgs, exclusive: bool) -> tuple[str, bool]:
  """`build`'s work, under the dataset's build lock (`exclusive`: alone,
  so it may delete and write; else beside other readers, reading only):
  (path, whether it built)."""
  dataset, data_dir, manual_dir, config, path = (
      args.dataset, args.data_dir, args.manual_dir, args.config, args.path)
  rebuild = (f"rebuild it with `python -m launch.build_dataset"
             f" --dataset={dataset} --data_dir={data_dir} --force_rebuild"
             f" ...`, or delete {path} and rerun: a run rebuilds a missing"
             " dataset")
  if exclusive:
    # Only under the exclusive lock: an incomplete.* directory may be the
    # live one of a build running beside this one otherwise.
    _remove_stale_builds(path, args.force_rebuild)
    _note_other_versions(path)
  reads_from = None
  if args.reads_manual_dir:
    reads_from = manual_dir or os.path.join(data_dir, "downloads", "manual")
  fingerprint = None
  reused = os.path.exists(path)
  if reused:  # TFDS would read it back and trust it
    dataset_check.check(path, rebuild=rebuild)
    if reads_from:
      _note_one_folder_build(path, reads_from)
      _check_inputs(path, contextual_tags.input_fingerprint(
          config, reads_from), rebuild)
  else:
    if reads_from and not manual_dir:
      _check_manual_dir(dataset, reads_from, config, given=False)
    if reads_from:  # before the build reads anything: a later change shows
      fingerprint = contextual_tags.input_fingerprint(config, reads_from)
    origin = (f"from {reads_from}" if reads_from
              else f"({config.source}, nothing to download)")
    print(f"building contextual_tags/{config.name}"
          f" {contextual_tags.Builder.VERSION} into {path} {origin} ...",
          flush=True, file=sys.stderr)
  builder = contextual_tags.Builder(
      data_dir=data_dir, config=config,
      strict=args.strict, workers=args.workers,
      beam_options=args.beam_options, inputs=fingerprint)
  try:
    # TFDS's own lines on stdout ("Downloading and preparing dataset Unknown
    # size ...", "... downloaded and prepared to ...") say it downloads, which
    # no config does; the line above said what is built, and every note of a
    # build goes to stderr.
    # The format only of what a new build writes: TFDS refuses a builder
    # made for array_record on a dataset that lists tfrecord first (`tfds
    # build`'s, with array_record added by `tfds convert_format`).
    with contextlib.redirect_stdout(io.StringIO()):
      builder.download_and_prepare(
          file_format="array_record",
          download_config=tfds.download.DownloadConfig(
              manual_dir=manual_dir, beam_options=args.beam_options))
  except BaseException as error:
    if exclusive:
      _remove_empty_dirs(args.new_dirs)
    if files.is_disk_full(error):  # TFDS and array_record wrap it deep
      raise files.WriteError(
          f"{path}: the disk filled up while the dataset was written; free"
          " space and rerun (the unfinished build is discarded, decoded"
          " mels are kept)") from error
    raise
  if os.fspath(builder.data_path) != path:
    raise AssertionError(f"TFDS built {builder.data_path}, not {path}")
  return path, not reused


def _check_inputs(path: str, current: dict, rebuild: str) -> None:
  """Refuses a dataset whose manual dir no longer holds what it was built
  from, naming what changed; notes one built before ctxtag recorded its
  inputs, and one whose inputs moved to another directory unchanged."""
  recorded = inputs_lib.read(path)
  if recorded is None:
    print(f"note: {path} was built by a ctxtag that did not record its"
          f" inputs, so it is not checked against {current['manual_dir']};"
          " --force_rebuild rebuilds it from there",
          file=sys.stderr, flush=True)
    return
  changed = inputs_lib.changes(recorded, current)
  built_from = recorded.get("manual_dir")
  if changed:
    moved = (f" (it was built from {built_from})"
             if built_from and built_from != current["manual_dir"] else "")
    raise errors.DatasetError(
        f"{path} was built from other inputs than {current['manual_dir']}"
        f" holds now{moved}: {'; '.join(changed)}; {rebuild}")
  if built_from and built_from != current["manual_dir"]:
    print(f"note: {path} was built from {built_from}; {current['manual_dir']}"
          " holds the same inputs (names, sizes, times, tables): reusing it",
          flush=True, file=sys.stderr)


def _remove_empty_dirs(directories: list[str]) -> None:
  """Removes those of `directories` (deepest first) that a failed build
  left holding nothing but TFDS's builder metadata (`.config`), so a
  refused build leaves no empty data dir behind. Mel caches are kept: the
  next build resumes from them."""
  for directory in directories:
    if os.path.isdir(directory) and set(os.listdir(directory)) <= {
        ".config", locks.BUILD_LOCK}:  # the lock: held by this build
      shutil.rmtree(directory, ignore_errors=True)


def _check_manual_dir(dataset: str, manual_dir: str, config,
                      given: bool) -> None:
  """Refuses a missing or empty manual dir in one line that names the files
  expected there (before anything is written).

  Args:
    dataset: the dataset's name, for the message.
    manual_dir: the directory.
    config: the builder config that reads it.
    given: the user named it (else it is TFDS's default).
  """
  if os.path.isdir(manual_dir) and os.listdir(manual_dir):
    return
  what = "no such directory" if not os.path.isdir(manual_dir) else "empty"
  which = (f"manual dir {manual_dir}" if given else
           f"no manual dir given (--manual_dir, or --config.manual_dir for"
           f" runs) and the default {manual_dir}")
  raise errors.DatasetError(
      f"{which}: {what}; {dataset} reads there"
      f" {contextual_tags.expected_files(config, manual_dir)}")


def _note_one_folder_build(path: str, manual_dir: str) -> None:
  """Says so when `path` was built by a ctxtag that read only audio/ of a
  manual dir that also holds spectrograms/: its npz-only tracks were
  counted audio_missing."""
  report_path = os.path.join(path, build_report.REPORT_FILE)
  both = all(os.path.isdir(os.path.join(manual_dir, folder))
             for folder in ("audio", "spectrograms"))
  if not both or not os.path.exists(report_path):
    return
  with open(report_path) as f:
    if "sources" in json.load(f):
      return
  print(f"note: {path} was built by a ctxtag that read only audio/ of"
        f" {manual_dir}, which holds spectrograms/ too: tracks with only an"
        " npz were counted audio_missing. Rebuild it with --force_rebuild to"
        " read each track from whichever folder holds it.",
        file=sys.stderr, flush=True)


def _stale_builds(path: str) -> list[str]:
  """TFDS's `incomplete.*` directories of `path`'s version: left by killed
  builds, or the live one of a build running now (then it holds the
  lock)."""
  parent, version = os.path.split(path)
  return glob.glob(os.path.join(glob.escape(parent),
                                f"incomplete.*_{version}"))


def _remove_stale_builds(path: str, force_rebuild: bool) -> None:
  """Deletes what killed builds left (TFDS's `incomplete.*` directories) and,
  with `force_rebuild`, the dataset itself. Call it only under the
  dataset's exclusive build lock: a build running beside this one would
  lose its live directory."""
  for stale in _stale_builds(path):
    print(f"removing {stale}, left by an interrupted build",
          file=sys.stderr, flush=True)
    shutil.rmtree(stale, ignore_errors=True)
  if force_rebuild and os.path.exists(path):
    print(f"removing {path} to rebuild it (--force_rebuild)",
          file=sys.stderr, flush=True)
    shutil.rmtree(path)


def _note_other_versions(path: str) -> None:
  """Says so when a dataset of another version sits beside `path`: it is
  never read (another version holds other data), and a build follows."""
  parent, version = os.path.split(path)
  if os.path.exists(path) or not os.path.isdir(parent):
    return
  others = sorted(name for name in os.listdir(parent)
                  if name != version and not name.startswith("incomplete.")
                  and os.path.isdir(os.path.join(parent, name)))
  if others:
    print(f"{parent}: version {', '.join(others)} built by an earlier ctxtag"
          f" is not read: this one builds version {version}"
          f" ({contextual_tags.Builder.RELEASE_NOTES.get(version, '')})."
          " Building it; delete the old one to free its space.",
          file=sys.stderr, flush=True)


def build_report_text(dataset_path: str) -> str:
  """The build report of a real-data dataset as text; "" if it has none."""
  path = os.path.join(dataset_path, build_report.REPORT_FILE)
  if not os.path.exists(path):
    return ""
  with open(path) as f:
    return build_report.format_report(json.load(f))


def split_settings(config: ml_collections.ConfigDict
                   ) -> assemble.SplitSettings:
  """The split a run config asks for."""
  return assemble.SplitSettings(config.split_strategy, config.seed,
                                tuple(config.split_fractions))


# Settings of a run config that name directories.
PATH_SETTINGS = ("data_dir", "manual_dir")


def absolute_paths(config: ml_collections.ConfigDict,
                   saved_config: str | None = None
                   ) -> ml_collections.ConfigDict:
  """A copy of a run config with data_dir and manual_dir expanded (`~`) and
  absolute, as config.json stores them: the workdir then means the same
  dataset from any directory.

  A config.json written by an older ctxtag holds these paths as given,
  possibly relative; that ctxtag resolved them against the directory each
  command ran in, and so does this one: where the saved relative path
  names the same directory from here, the copy keeps the saved text, so
  the same command rerun from the same directory still matches the saved
  config (run_config.save compares them) and the old file stays as it is.
  From another directory, where the run's dataset (dataset_path.txt, as
  relative) is not found, it is refused rather than built anew there.

  Args:
    config: a run config.
    saved_config: the workdir's config.json, if there is one.

  Returns:
    The copy; `config` itself is unchanged.

  Raises:
    errors.ConfigError: an older workdir's relative data_dir, used from a
      directory where its dataset is not.
  """
  saved = {}
  if saved_config and os.path.exists(saved_config):
    try:
      with open(saved_config) as f:
        saved = json.load(f)
    except (OSError, ValueError):
      saved = {}  # damaged: run_config.save names it
  if not isinstance(saved, dict):
    saved = {}
  config = config.copy_and_resolve_references()
  for key in PATH_SETTINGS:
    value = config.get(key)
    if not isinstance(value, str) or not value:
      continue  # "" means the default; a non-text value: validate refuses
    value = files.absolute(value)
    old = saved.get(key)
    if isinstance(old, str) and old and files.absolute(old) == value:
      if key == "data_dir" and not os.path.isabs(os.path.expanduser(old)):
        _check_old_dataset_path(saved_config, old)
      value = old
    config[key] = value
  return config


def _check_old_dataset_path(saved_config: str, data_dir: str) -> None:
  """Refuses to read an older workdir's relative data_dir from a directory
  where the dataset it was made on is not: it was made from another one,
  and the run would build a new dataset there."""
  path = os.path.join(os.path.dirname(saved_config), "dataset_path.txt")
  try:
    with open(path) as f:
      made_on = f.read().strip()
  except OSError:
    return  # no dataset yet: nothing to find
  if made_on and not os.path.isabs(made_on) and not os.path.exists(made_on):
    raise errors.ConfigError(
        f"{saved_config}: data_dir {data_dir!r} is relative (an older ctxtag"
        f" wrote it) and the run's dataset {made_on} is not there from"
        f" {os.getcwd()}: run the command from the directory the run was"
        " made in, or use a new --workdir")


def check_dataset_settings(config) -> None:
  """What the build will refuse, refused before config.json is written:
  dataset options, the split, a manual dir that is not there."""
  config_name = config.dataset.partition("/")[2]  # the form: run_config
  contextual_tags.config_with_overrides(
      config_name, options_lib.parse(config.dataset_options),
      split_settings(config))
  if config.manual_dir and not os.path.isdir(
      os.path.expanduser(config.manual_dir)):
    expected = contextual_tags.expected_files(
        contextual_tags.config_with_overrides(config_name, {}),
        config.manual_dir)
    expected = f"; {config.dataset} reads there {expected}" if expected else ""
    raise errors.ConfigError(
        f"config manual_dir={config.manual_dir!r}: no such directory"
        + expected)


def summary_text(dataset_path: str) -> str:
  """Tracks, pairs, users and context shares of each split, as text."""
  summaries = {split: dataset_stats.summarize(
      input_pipeline.load_split(dataset_path, split)) for split in SPLITS}
  return dataset_stats.format_summary(summaries)


def source_settings(config: ml_collections.ConfigDict):
  """The settings of a run config's dataset source (the simulated world's
  SimulationConfig, a real source's options)."""
  return contextual_tags.config_with_overrides(
      config.dataset.partition("/")[2],
      options_lib.parse(config.dataset_options), split_settings(config)
  ).settings


def simulated_world(config: ml_collections.ConfigDict):
  """The simulated world a run's dataset was drawn from (it is a function
  of its settings), or None for real data: it gives the true context
  distribution of any (user, track), not only of the pairs drawn."""
  settings = source_settings(config)
  if not isinstance(settings, simulated.SimulationConfig):
    return None
  return simulated.World(settings)
