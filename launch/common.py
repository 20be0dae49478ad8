"""What the launchers share: building, evaluating and keeping a run's files.

No flags here: every launcher defines its own and calls these functions.
In a run on several processes (ctxtag.distributed), every process calls the
same functions: process 0 alone builds the dataset and writes the run's
files, and the others wait for it where they read them.
"""

import glob
import json
import os
import shutil

from absl import flags
from absl import logging
import ml_collections
import tensorflow_datasets as tfds

from ctxtag import dataset_check
from ctxtag import dataset_stats
from ctxtag import distributed
from ctxtag import errors
from ctxtag import files
from ctxtag import inference
from ctxtag import input_pipeline
from ctxtag import predictions
from ctxtag import report
from ctxtag import study
from ctxtag import tables
from ctxtag.sources import assemble
from ctxtag.sources import build_report
from ctxtag.sources import options as options_lib
from tfds_builders import contextual_tags

SPLITS = ("train", "validation", "test")


def quiet_library_logs() -> None:
  """Keeps the terminal to progress and results: orbax and TFDS log each
  checkpoint write and file at INFO, and TFDS warns of every config built
  with changed settings. An explicit --verbosity still wins."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)
    tfds.disable_progress_bar()  # the build prints its own progress


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
    The versioned directory of the built dataset.
  """
  name, _, config_name = dataset.partition("/")
  if name != "contextual_tags" or not config_name:
    raise errors.ConfigError(f"--dataset must be contextual_tags/<config>,"
                             f" got {dataset!r}")
  config = contextual_tags.config_with_overrides(
      config_name, options_lib.parse(options), split)
  if manual_dir and not os.path.isdir(manual_dir):
    raise errors.DatasetError(f"--manual_dir {manual_dir}: no such directory")
  data_dir = os.path.expanduser(data_dir)
  path = os.path.join(data_dir, contextual_tags.Builder.name, config.name,
                      str(contextual_tags.Builder.VERSION))
  rebuild = (f"rebuild it with `python -m launch.build_dataset"
             f" --dataset={dataset} --data_dir={data_dir} --force_rebuild"
             f" ...`, or delete {path} and rerun: a run rebuilds a missing"
             " dataset")
  _remove_stale_builds(path, force_rebuild)
  _note_other_versions(path)
  if os.path.exists(path):  # TFDS would read it back and trust it
    dataset_check.check(path, rebuild=rebuild)
  builder = contextual_tags.Builder(
      data_dir=data_dir, config=config, file_format="array_record",
      strict=strict, workers=workers, beam_options=beam_options)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=os.path.abspath(os.path.expanduser(manual_dir))
      if manual_dir else None, beam_options=beam_options))
  if os.fspath(builder.data_path) != path:
    raise AssertionError(f"TFDS built {builder.data_path}, not {path}")
  return path


def _remove_stale_builds(path: str, force_rebuild: bool) -> None:
  """Deletes what killed builds left (TFDS's `incomplete.*` directories) and,
  with `force_rebuild`, the dataset itself. One build at a time per data
  dir: a build running beside this one would lose its directory."""
  parent, version = os.path.split(path)
  for stale in glob.glob(os.path.join(glob.escape(parent),
                                      f"incomplete.*_{version}")):
    print(f"removing {stale}, left by an interrupted build", flush=True)
    shutil.rmtree(stale, ignore_errors=True)
  if force_rebuild and os.path.exists(path):
    print(f"removing {path} to rebuild it (--force_rebuild)", flush=True)
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
          " Building it; delete the old one to free its space.", flush=True)


def build_report_text(dataset_path: str) -> str:
  """The build report of a real-data dataset as text; "" if it has none."""
  path = os.path.join(dataset_path, build_report.REPORT_FILE)
  if not os.path.exists(path):
    return ""
  with open(path) as f:
    return build_report.format_report(json.load(f))


def _split_settings(config) -> assemble.SplitSettings:
  return assemble.SplitSettings(config.split_strategy, config.seed,
                                tuple(config.split_fractions))


def _check_dataset_settings(config) -> None:
  """What the build will refuse, refused before config.json is written:
  dataset options, the split, a manual dir that is not there."""
  config_name = config.dataset.partition("/")[2]  # the form: run_config
  contextual_tags.config_with_overrides(
      config_name, options_lib.parse(config.dataset_options),
      _split_settings(config))
  if config.manual_dir and not os.path.isdir(
      os.path.expanduser(config.manual_dir)):
    raise errors.ConfigError(
        f"config manual_dir={config.manual_dir!r}: no such directory")


def summary_text(dataset_path: str) -> str:
  summaries = {split: dataset_stats.summarize(
      input_pipeline.load_split(dataset_path, split)) for split in SPLITS}
  return dataset_stats.format_summary(summaries)


def evaluate_tables(output_dir: str, groundtruth: str, audio: str | None,
                    pair_models: dict[str, str], title: str,
                    details: list[str], training: dict | None = None,
                    validation: tuple[str, str] | None = None,
                    train_groundtruth: str | None = None, train_labels=None,
                    settings=None) -> dict:
  """Evaluates prediction CSVs; writes results.json, report.md and plots.

  Every table is read and checked, and every output rendered, before the
  first byte is written; the outputs then replace earlier ones together.
  The optional arguments are those of `ctxtag.study.evaluate_csvs`.
  """
  results = study.evaluate_csvs(groundtruth, audio, pair_models, validation,
                                train_groundtruth, train_labels, settings)
  report.write_outputs(output_dir, results, title, details, training or {})
  return results


def _run_file(workdir: str, name: str) -> str:
  """The path of a file every run has; an error if this run lacks it."""
  path = os.path.join(workdir, name)
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"{workdir}: no such directory; expected the"
                            " --workdir of a ctxtag run")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing; is {workdir} a ctxtag run?")
  return path


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run was made with; a ConfigError if it is damaged."""
  from ctxtag import run_config  # pylint: disable=g-import-not-at-top
  return ml_collections.ConfigDict(
      run_config.load(_run_file(workdir, "config.json")))


def dataset_details(config: ml_collections.ConfigDict,
                    dataset_path: str) -> list[str]:
  """Lines for report.md saying what data a run was made on."""
  options = (f" with `{config.dataset_options}`" if config.dataset_options
             else "")
  lines = [f"Dataset: `{config.dataset}`{options} at `{dataset_path}`;"
           f" seed {config.seed}; models: {', '.join(config.models)}."]
  config_name = config.dataset.partition("/")[2]
  if config_name.startswith("zenodo"):
    lines.append(
        "Data: the paper's own public release (Zenodo record 3961560):"
        " its splits and user embeddings, with the tracks' audio from"
        f" `{config.manual_dir or 'the TFDS manual dir'}`.")
  elif config_name.startswith("simulated"):
    lines.append("Data: the simulated listening world (ctxtag.sources."
                 "simulated), not the paper's data.")
  report_text = build_report_text(dataset_path)
  if report_text:
    lines.append(f"Build: {report_text.splitlines()[0].partition(': ')[2]}"
                 " (build_report.json beside the dataset).")
  return lines


def evaluate_workdir(workdir: str, dataset_path: str, split: str = "test",
                     details: list[str] | None = None,
                     settings=None) -> dict | None:
  """Predicts with every trained model of a run and evaluates `split`.

  The test split also gets thresholds tuned on the validation split and,
  with an oracle (simulated data), each model's share of the ceiling over
  the training prior. `settings`: the bootstrap's (ctxtag.evaluation.
  bootstrap.Settings; default 1,000 resamples, seed 0).

  Returns:
    The results; None on processes other than 0 of a run on several, which
    predict with the others but leave the evaluation to process 0.
  """
  config = load_run_config(workdir)
  distributed.on_main("write the ground truth", lambda: (
      predictions.write_groundtruth(dataset_path, workdir)))
  for name in config.models:
    predictions.write_model_predictions(name, config, dataset_path, workdir)
  return distributed.on_main("evaluate", lambda: _evaluate_predictions(
      config, workdir, dataset_path, split, details, settings))


def _evaluate_predictions(config, workdir: str, dataset_path: str, split: str,
                          details: list[str] | None, settings) -> dict:
  """`evaluate_workdir`'s evaluation of the prediction CSVs."""
  training = {}
  for name in config.models:
    with open(os.path.join(workdir, name, "summary.json")) as f:
      training[name] = json.load(f)
  pair_models = {
      name: predictions.path(workdir, split, name)
      for name in study.PAIR_MODELS
      if os.path.exists(predictions.path(workdir, split, name))}
  audio = predictions.path(workdir, split, "audio")
  validation = tuple(predictions.path(workdir, "validation", what)
                     for what in ("groundtruth", "audio"))
  tune = split == "test" and all(map(os.path.exists, validation))
  return evaluate_tables(
      workdir, predictions.path(workdir, split, "groundtruth"),
      audio if os.path.exists(audio) else None, pair_models,
      f"ctxtag run: {config.dataset}, {split} split",
      details or [f"Dataset: `{dataset_path}`."], training,
      validation=validation if tune else None,
      train_labels=input_pipeline.load_split(dataset_path, "train").label_P
      if "oracle" in pair_models else None, settings=settings)


def save_config(config, workdir: str, check_dataset: bool = False) -> None:
  """Validates the config, then writes it atomically.

  A config that fails validation is never written, so its corrected rerun is
  not refused. `check_dataset` also checks the dataset's settings first.

  Raises:
    errors.ConfigError: for a bad setting (ctxtag.run_config.validate) or a
      workdir made with another config.
  """
  # Imported here while the module's import block is edited elsewhere.
  from ctxtag import run_config  # pylint: disable=g-import-not-at-top
  from launch.configs import default  # pylint: disable=g-import-not-at-top
  run_config.validate(
      config, declared=default.get_config(),
      datasets=[c.name for c in contextual_tags.BUILDER_CONFIGS])
  if check_dataset:
    _check_dataset_settings(config)
  run_config.save(config, os.path.join(workdir, "config.json"),
                  declared=default.get_config(),
                  datasets=[c.name for c in contextual_tags.BUILDER_CONFIGS])


def prepare_run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Saves the config in the workdir and builds the dataset if missing;
  keeps in the workdir what tagging new audio needs (ctxtag.inference).

  In a run on several processes, process 0 does this while the others wait,
  then they read the dataset it built.

  Returns:
    The versioned directory of the run's dataset.

  Raises:
    errors.DatasetError: on a process other than 0 that cannot see the
      dataset process 0 built (no shared filesystem).
  """
  dataset_path = distributed.on_main(
      "prepare the run", lambda: _prepare_run(config, workdir), share=True)
  if not os.path.exists(os.path.join(dataset_path, "dataset_info.json")):
    raise errors.DatasetError(
        f"{dataset_path}: this process cannot see the dataset process 0"
        " built; a run on several hosts needs config data_dir (or the"
        " --workdir) on a filesystem every host shares, or the same dataset"
        " at that path on every host")
  return dataset_path


def _prepare_run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`prepare_run`'s work, on one process."""
  check_dataset_version(workdir)
  save_config(config, workdir, check_dataset=True)
  data_dir = config.data_dir or os.path.join(workdir, "data")
  dataset_path = build(config.dataset, data_dir,
                       manual_dir=config.manual_dir or None,
                       options=config.dataset_options,
                       split=_split_settings(config))
  files.write_text(os.path.join(workdir, "dataset_path.txt"), dataset_path)
  settings = contextual_tags.config_with_overrides(
      config.dataset.partition("/")[2],
      options_lib.parse(config.dataset_options), _split_settings(config)
  ).settings
  # Real sources start excerpts at an offset and pad short ends; the
  # simulated world renders whole excerpts.
  inference.save_run_card(
      workdir, dataset_path, config.dataset, settings.excerpt_seconds,
      getattr(settings, "offset_seconds", 0.0),
      getattr(settings, "max_padding_seconds", 0.0))
  return dataset_path


def check_dataset_version(workdir: str) -> None:
  """Refuses to go on with a run made on another version of the dataset.

  Its models were trained on data this ctxtag no longer builds (a new
  version changes what a config writes, see the builder's RELEASE_NOTES);
  resuming or evaluating them on the new build would mix two datasets.

  Raises:
    errors.DatasetError: naming both versions and what to do.
  """
  path = os.path.join(workdir, "dataset_path.txt")
  if not os.path.exists(path):
    return
  with open(path) as f:
    made_on = f.read().strip()
  version, current = os.path.basename(made_on), str(
      contextual_tags.Builder.VERSION)
  if version != current:
    raise errors.DatasetError(
        f"{workdir} was made on {made_on}, version {version} of the dataset;"
        f" this ctxtag builds version {current}"
        f" ({contextual_tags.Builder.RELEASE_NOTES[current]}) so its models"
        " were trained on other data: use a new --workdir (the dataset is"
        " built there anew), or the ctxtag that made this run")


def run_dataset_path(workdir: str) -> str:
  """The dataset a run was made on (written by `prepare_run`)."""
  with open(_run_file(workdir, "dataset_path.txt")) as f:
    return f.read().strip()
