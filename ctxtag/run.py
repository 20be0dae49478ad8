"""A run directory from config to results: prepare it, train its models,
predict with them and evaluate.

A workdir holds everything a run made: config.json, dataset_path.txt, one
directory per model (checkpoints, metrics, summary), predictions/,
results.json, report.md and plots/. In a run on several processes
(ctxtag.distributed), every process calls the same functions: process 0
alone builds the dataset and writes the run's files, and the others wait for
it where they read them.
"""

import dataclasses
import os
import time

import ml_collections
import numpy as np

from ctxtag import datasets
from ctxtag import distributed
from ctxtag import errors
from ctxtag import files
from ctxtag import inference
from ctxtag import input_pipeline
from ctxtag import locks
from ctxtag import models
from ctxtag import predictions
from ctxtag import recommend
from ctxtag import report
from ctxtag import run_config
from ctxtag import study
from ctxtag import train
from ctxtag.configs import default
from ctxtag.evaluation import bootstrap
from tfds_builders import contextual_tags


def reproduce(config, workdir: str, settings=None) -> dict | None:
  """Runs the whole study; returns the results dict (None on processes other
  than 0 of a run on several: process 0 evaluates).

  Holds the workdir's lock throughout (ctxtag.locks): a second run on the
  workdir ends at once, naming this one. `settings`: the bootstrap's, as
  for `evaluate_workdir`.
  """
  with locks.run_lock(workdir):
    return _reproduce(config, workdir, settings)


def _reproduce(config, workdir: str, settings=None) -> dict | None:
  """`reproduce`'s work, under the workdir's lock."""
  start = time.time()
  dataset_path = prepare_run(config, workdir)
  if distributed.is_main():
    print(datasets.summary_text(dataset_path), flush=True)
    if datasets.build_report_text(dataset_path):
      print(datasets.build_report_text(dataset_path), flush=True)
  for name in config.models:
    train.train_and_evaluate(name, config, dataset_path, workdir)
  details = dataset_details(config, dataset_path)
  results = evaluate_workdir(workdir, dataset_path, "test", details,
                             settings=settings)
  elapsed = time.time() - start
  if distributed.is_main():
    print(f"reproduction finished in {elapsed / 60:.1f} min; see"
          f" {os.path.join(workdir, 'report.md')}", flush=True)
  return results


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Prediction tables and how to evaluate and report them.

  Attributes:
    files: the tables (ctxtag.evaluation.inputs.CsvFiles).
    title: report.md's title.
    details: report.md's lines on the data.
    training: each model's training summary (summary.json), for the report.
    settings: the bootstrap's (default 1,000 resamples, seed 0).
    mo_mg_truth: MO-MG's ground truth (ctxtag.study.MO_MG_TRUTHS).
    train_labels: the training split's labels, for ceiling_share's prior
      when `files` has no training ground truth.
    extra: keys added to the results (a run's fusion_weights).
    catalog: by model, the retrieval protocol's catalogs beyond what the
      tables give (ctxtag.recommend.evaluation_catalogs).
    per_user_path: where to keep every per-user statistic (an .npz), if
      anywhere.
  """
  files: study.CsvFiles
  title: str
  details: list[str]
  training: dict = dataclasses.field(default_factory=dict)
  settings: bootstrap.Settings | None = None
  mo_mg_truth: str = "test"
  train_labels: np.ndarray | None = None
  extra: dict = dataclasses.field(default_factory=dict)
  catalog: dict = dataclasses.field(default_factory=dict)
  per_user_path: str | None = None


def evaluate_tables(output_dir: str, evaluation: Evaluation) -> dict:
  """Evaluates prediction CSVs; writes results.json, report.md and plots.

  Every table is read and checked, and every output rendered, before the
  first byte is written; the outputs then replace earlier ones together.
  """
  results = study.evaluate_csvs(evaluation.files, evaluation.settings,
                                evaluation.mo_mg_truth,
                                evaluation.train_labels, evaluation.catalog,
                                evaluation.per_user_path)
  results.update(evaluation.extra)
  report.write_outputs(output_dir, results, evaluation.title,
                       evaluation.details, evaluation.training)
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
  report_text = datasets.build_report_text(dataset_path)
  if report_text:
    lines.append(f"Build: {report_text.splitlines()[0].partition(': ')[2]}"
                 " (build_report.json beside the dataset).")
  return lines


def evaluate_workdir(workdir: str, dataset_path: str, split: str = "test",
                     details: list[str] | None = None,
                     settings=None, mo_mg_truth: str | None = None
                     ) -> dict | None:
  """Predicts with every trained model of a run and evaluates `split`.

  The test split also gets thresholds tuned on the validation split and,
  with an oracle (simulated data), each model's share of the ceiling over
  the training prior. `settings`: the bootstrap's (ctxtag.evaluation.
  bootstrap.Settings; default 1,000 resamples, seed 0). `details`: report.md's
  lines on the data (default `dataset_details`). `mo_mg_truth`: MO-MG's
  ground truth (ctxtag.study.MO_MG_TRUTHS; default the run config's).

  Returns:
    The results; None on processes other than 0 of a run on several, which
    predict with the others but leave the evaluation to process 0.
  """
  config = load_run_config(workdir)
  keep_reading(dataset_path)
  # A run made before the key existed used the evaluated split's pairs.
  mo_mg_truth = mo_mg_truth or config.get("mo_mg_truth", "test")
  distributed.on_main("write the ground truth", lambda: (
      predictions.write_groundtruth(dataset_path, workdir)))
  if mo_mg_truth == "all_splits":
    distributed.on_main("write the training ground truth", lambda: (
        predictions.write_train_groundtruth(dataset_path, workdir)))
  for name in config.models:
    predictions.write_model_predictions(name, config, dataset_path, workdir)
  # Restoring a checkpoint is collective on several processes: every process
  # reads the weights, not process 0 alone inside on_main.
  training = {name: train.read_summary(workdir, name)
              for name in config.models}
  weights = predictions.fusion_weights(config, dataset_path, workdir,
                                       training)
  catalogs = recommend.evaluation_catalogs(config, workdir, dataset_path,
                                           split)
  def evaluate():
    evaluation = workdir_evaluation(config, workdir, dataset_path, split,
                                    mo_mg_truth, training)
    return evaluate_tables(workdir, dataclasses.replace(
        evaluation, details=details or evaluation.details, settings=settings,
        extra=weights, catalog=catalogs,
        per_user_path=os.path.join(workdir, "predictions",
                                   f"{split}_per_user.npz")))
  return distributed.on_main("evaluate", evaluate)


def workdir_evaluation(config: ml_collections.ConfigDict, workdir: str,
                       dataset_path: str, split: str, mo_mg_truth: str,
                       training: dict) -> Evaluation:
  """The `Evaluation` of a run's prediction CSVs of `split` (written by
  `evaluate_workdir`) with MO-MG's ground truth `mo_mg_truth`; `training`:
  each model's training summary (`train.read_summary`)."""
  found = {name: predictions.path(workdir, split, name)
           for name in models.MODELS
           if os.path.exists(predictions.path(workdir, split, name))}
  validation = {name: predictions.path(workdir, "validation", name)
                for name in found
                if models.get(name).output == "multi_label"}
  groundtruth = predictions.path(workdir, "validation", "groundtruth")
  tune = (split == "test" and validation and os.path.exists(groundtruth)
          and all(map(os.path.exists, validation.values())))
  files = study.CsvFiles(
      predictions.path(workdir, split, "groundtruth"), found,
      groundtruth if tune else None, validation if tune else {},
      other_groundtruths=[
          predictions.path(workdir, other, "groundtruth")
          for other in predictions.ALL_SPLITS if other != split
      ] if mo_mg_truth == "all_splits" else ())
  return Evaluation(
      files, f"ctxtag run: {config.dataset}, {split} split",
      dataset_details(config, dataset_path), training,
      mo_mg_truth=mo_mg_truth,
      train_labels=input_pipeline.load_split(dataset_path, "train").label_P
      if "oracle" in found else None)


def save_config(config, workdir: str, check_dataset: bool = False) -> None:
  """Validates the config, then writes it atomically.

  A config that fails validation is never written, so its corrected rerun is
  not refused. `check_dataset` also checks the dataset's settings first.

  Raises:
    errors.ConfigError: for a bad setting (ctxtag.run_config.validate) or a
      workdir made with another config.
  """
  # Saved absolute, so the workdir means the same data from any directory.
  config = datasets.absolute_paths(config,
                                   os.path.join(workdir, "config.json"))
  run_config.validate(
      config, declared=default.get_config(),
      datasets=[c.name for c in contextual_tags.BUILDER_CONFIGS])
  if check_dataset:
    datasets.check_dataset_settings(config)
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
  keep_reading(dataset_path)
  if not os.path.exists(os.path.join(dataset_path, "dataset_info.json")):
    raise errors.DatasetError(
        f"{dataset_path}: this process cannot see the dataset process 0"
        " built; a run on several hosts needs config data_dir (or the"
        " --workdir) on a filesystem every host shares, or the same dataset"
        " at that path on every host")
  return dataset_path


def _prepare_run(config: ml_collections.ConfigDict, workdir: str) -> str:
  """`prepare_run`'s work, on one process."""
  # Before anything is written; kept until the run ends (a no-op inside
  # `reproduce` or a launcher, which hold it already).
  locks.keep(workdir, locks.RUN_LOCK, locks.RUN_RULE)
  check_dataset_version(workdir)
  config_path = os.path.join(workdir, "config.json")
  fresh = not os.path.exists(config_path)
  save_config(config, workdir, check_dataset=True)
  data_dir = config.data_dir or os.path.join(workdir, "data")
  dataset_path = datasets.build(config.dataset, data_dir,
                       manual_dir=config.manual_dir or None,
                       options=config.dataset_options,
                       split=datasets.split_settings(config))
  try:
    check_batches_fit(config, dataset_path)
  except errors.ConfigError:
    if fresh:  # else its corrected rerun is refused as "another config"
      os.remove(config_path)
    raise
  files.write_text(os.path.join(workdir, "dataset_path.txt"), dataset_path)
  settings = datasets.source_settings(config)
  # Real sources start excerpts at an offset and pad short ends; the
  # simulated world renders whole excerpts.
  inference.save_run_card(
      workdir, dataset_path, config.dataset, settings.excerpt_seconds,
      getattr(settings, "offset_seconds", 0.0),
      getattr(settings, "max_padding_seconds", 0.0))
  return dataset_path


def keep_reading(dataset_path: str) -> None:
  """Holds the dataset's reader lock until the process ends: a forced
  rebuild (which needs it alone) is refused while a run reads the data,
  instead of deleting it under the run. Process 0 holds it for a run on
  several: the others write nothing but their checkpoint parts."""
  if os.path.isdir(dataset_path) and distributed.is_main():
    locks.keep(os.path.dirname(dataset_path), locks.BUILD_LOCK,
               locks.BUILD_RULE, shared=True)


def check_batches_fit(config: ml_collections.ConfigDict,
                      dataset_path: str) -> None:
  """Refuses a model whose training batch is larger than the split its
  steps draw from (it would have no step in an epoch); needs the built
  dataset, so it runs after the build.

  Raises:
    errors.ConfigError: naming the setting, the split's size and the fix.
  """
  train_split, validation = (input_pipeline.load_split(dataset_path, name)
                             for name in ("train", "validation"))
  for name in config.models:
    split = train.split_fitted_on(name, config[name], train_split, validation)
    kind = models.BATCH_KINDS[name]
    count = input_pipeline.num_examples(split, kind)
    size = config[name].batch_size
    if size > count:
      noun = "tracks" if kind == "tracks" else "pairs"
      raise errors.ConfigError(
          f"config {name}.batch_size={size}: larger than the {count} {noun}"
          f" of split {split.name!r}; expected at most {count}")


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
