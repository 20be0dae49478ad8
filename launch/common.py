"""What the launchers share: building, evaluating and keeping a run's files.

No flags here: every launcher defines its own and calls these functions.
"""

import json
import os

from absl import flags
from absl import logging
import ml_collections
import tensorflow_datasets as tfds

from ctxtag import dataset_stats
from ctxtag import input_pipeline
from ctxtag import predictions
from ctxtag import report
from ctxtag import study
from ctxtag import tables
from tfds_builders import contextual_tags

SPLITS = ("train", "validation", "test")


def quiet_library_logs() -> None:
  """Keeps the terminal to progress and results: orbax and TFDS log each
  checkpoint write and file at INFO. An explicit --verbosity still wins."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def build(dataset: str, data_dir: str, manual_dir: str | None = None,
          simulation_overrides: str = "") -> str:
  """Builds `dataset` under `data_dir` unless it is already complete.

  TFDS writes into an `incomplete.*` directory and renames it only once every
  split is written, so an interrupted build never reads as complete.

  Args:
    dataset: "contextual_tags/<config>".
    data_dir: the TFDS data directory.
    manual_dir: directory of manually obtained files, if the config reads any.
    simulation_overrides: "key=value,..." simulation settings to replace.

  Returns:
    The versioned directory of the built dataset.
  """
  name, _, config_name = dataset.partition("/")
  if name != "contextual_tags" or not config_name:
    raise ValueError(f"--dataset must be contextual_tags/<config>, got"
                     f" {dataset!r}")
  config = contextual_tags.config_with_overrides(
      config_name, contextual_tags.parse_overrides(simulation_overrides))
  builder = contextual_tags.Builder(
      data_dir=os.path.expanduser(data_dir), config=config,
      file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return os.fspath(builder.data_path)


def summary_text(dataset_path: str) -> str:
  summaries = {split: dataset_stats.summarize(
      input_pipeline.load_split(dataset_path, split)) for split in SPLITS}
  return dataset_stats.format_summary(summaries)


def evaluate_tables(output_dir: str, groundtruth: str, audio: str | None,
                    pair_models: dict[str, str], title: str,
                    details: list[str], training: dict | None = None) -> dict:
  """Evaluates prediction CSVs; writes results.json, report.md and plots."""
  truth = tables.read_groundtruth(groundtruth)
  results = study.evaluate(
      truth, tables.read(audio, with_user=False) if audio else None,
      {name: tables.read(path, with_user=True)
       for name, path in pair_models.items()})
  os.makedirs(output_dir, exist_ok=True)
  with open(os.path.join(output_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  report.write_report(os.path.join(output_dir, "report.md"), results, title,
                      details, training or {})
  report.write_plots(os.path.join(output_dir, "plots"), results,
                     training or {})
  return results


def _run_file(workdir: str, name: str) -> str:
  """The path of a file every run has; an error if this run lacks it."""
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing; is {workdir} a ctxtag run?")
  return path


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  with open(_run_file(workdir, "config.json")) as f:
    return ml_collections.ConfigDict(json.load(f))


def evaluate_workdir(workdir: str, dataset_path: str, split: str = "test",
                     details: list[str] | None = None) -> dict:
  """Predicts with every trained model of a run and evaluates `split`."""
  config = load_run_config(workdir)
  predictions.write_groundtruth(dataset_path, workdir)
  training = {}
  for name in config.models:
    predictions.write_model_predictions(name, config, dataset_path, workdir)
    with open(os.path.join(workdir, name, "summary.json")) as f:
      training[name] = json.load(f)
  pair_models = {
      name: predictions.path(workdir, split, name)
      for name in study.PAIR_MODELS
      if os.path.exists(predictions.path(workdir, split, name))}
  audio = predictions.path(workdir, split, "audio")
  return evaluate_tables(
      workdir, predictions.path(workdir, split, "groundtruth"),
      audio if os.path.exists(audio) else None, pair_models,
      f"ctxtag run: {config.dataset}, {split} split",
      details or [f"Dataset: `{dataset_path}`."], training)


def save_config(config, workdir: str) -> None:
  """Writes the config; refuses a workdir made with another config."""
  path = os.path.join(workdir, "config.json")
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    with open(path) as f:
      if json.load(f) != json.loads(text):
        raise ValueError(
            f"{path}: this workdir was made with another config; use a new"
            " --workdir or the same config")
    return
  os.makedirs(workdir, exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def prepare_run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Saves the config in the workdir and builds the dataset if missing.

  Returns:
    The versioned directory of the run's dataset.
  """
  save_config(config, workdir)
  data_dir = config.data_dir or os.path.join(workdir, "data")
  dataset_path = build(config.dataset, data_dir,
                       simulation_overrides=config.dataset_options)
  with open(os.path.join(workdir, "dataset_path.txt"), "w") as f:
    f.write(dataset_path)
  return dataset_path


def run_dataset_path(workdir: str) -> str:
  """The dataset a run was made on (written by `prepare_run`)."""
  with open(_run_file(workdir, "dataset_path.txt")) as f:
    return f.read().strip()
